//! fanotify permission events: the file-open and exec fallback (being written).
