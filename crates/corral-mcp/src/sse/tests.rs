#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use proptest::prelude::*;

fn decode(limit: usize, chunks: &[&[u8]]) -> Vec<Item> {
    let mut d = Decoder::new(limit);
    let mut out = Vec::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    out
}

fn all(s: &str) -> Vec<Item> {
    decode(1 << 20, &[s.as_bytes()])
}

fn ev(event: Option<&str>, data: Option<&str>, id: Option<&str>) -> Item {
    Item::Event(Event {
        event: event.map(str::to_string),
        data: data.map(str::to_string),
        id: id.map(str::to_string),
        retry: None,
    })
}

#[test]
fn data_lines_join_and_one_space_is_removed() {
    assert_eq!(
        all("data: a\ndata:b\ndata:  c\n\n"),
        [ev(None, Some("a\nb\n c"), None)]
    );
    // A field without a colon has an empty value.
    assert_eq!(all("data\ndata\n\n"), [ev(None, Some("\n"), None)]);
}

#[test]
fn every_line_end_counts_and_blank_lines_dispatch() {
    for s in [
        "event: e\r\ndata: x\r\n\r\n",
        "event: e\rdata: x\r\r",
        "event: e\ndata: x\n\n",
        "event: e\r\ndata: x\r\r\n",
    ] {
        assert_eq!(all(s), [ev(Some("e"), Some("x"), None)], "{s:?}");
    }
    // No blank line, no event.
    assert_eq!(all("data: x\n"), []);
}

#[test]
fn a_cr_at_the_end_of_a_chunk_is_one_line_end_with_a_following_lf() {
    // "data: a\r" | "\n" | "\r\n": one data line, then a blank line.
    assert_eq!(
        decode(1024, &[b"data: a\r", b"\n", b"\r", b"\n"]),
        [ev(None, Some("a"), None)]
    );
    // A CR then something else: the CR alone ended the line.
    assert_eq!(
        decode(1024, &[b"data: a\r", b"data: b\r", b"\r"]),
        [ev(None, Some("a\nb"), None)]
    );
}

#[test]
fn a_leading_bom_is_dropped_only_at_the_start() {
    assert_eq!(
        decode(1024, &[b"\xef", b"\xbb\xbfdata: x\n\n"]),
        [ev(None, Some("x"), None)]
    );
    // Later, a BOM is part of the field name: an unknown field.
    assert_eq!(all("data: x\n\n\u{feff}data: y\n\n"), [ev(None, Some("x"), None)]);
}

#[test]
fn id_with_nul_is_ignored_and_retry_takes_only_digits() {
    let got = all("id: 7\nretry: 1500\ndata: x\n\nid: a\0b\nretry: 15s\ndata: y\n\n");
    assert_eq!(
        got,
        [
            Item::Event(Event {
                event: None,
                data: Some("x".into()),
                id: Some("7".into()),
                retry: Some(1500),
            }),
            ev(None, Some("y"), None),
        ]
    );
    // An id-only block is kept: it moves the client's last event id.
    assert_eq!(all("id: 9\n\n"), [ev(None, None, Some("9"))]);
    assert_eq!(all("id\n\n"), [ev(None, None, Some(""))]);
}

#[test]
fn comments_are_yielded_at_once() {
    let mut d = Decoder::new(1024);
    let mut out = Vec::new();
    d.feed(b"data: a\n: keep-alive\n", &mut out);
    assert_eq!(out, [Item::Comment(" keep-alive".into())]);
    d.feed(b"\n", &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], ev(None, Some("a"), None));
}

#[test]
fn utf8_split_across_chunks_decodes_whole_and_invalid_bytes_are_replaced() {
    let s = "data: h\u{e9}llo \u{1f600}\n\n".as_bytes();
    let want = all("data: h\u{e9}llo \u{1f600}\n\n");
    for i in 0..s.len() {
        let (a, b) = s.split_at(i);
        assert_eq!(decode(1024, &[a, b]), want, "split at {i}");
    }
    assert_eq!(
        decode(1024, &[b"data: a\xe2\x82\n\n"]),
        [ev(None, Some("a\u{fffd}"), None)]
    );
}

#[test]
fn an_oversized_block_is_dropped_and_decoding_resumes_after_it() {
    let big = format!("data: {}\ndata: more\n\ndata: ok\n\n", "x".repeat(100));
    for chunks in [vec![big.as_bytes()], big.as_bytes().chunks(7).collect()] {
        let got = decode(64, &chunks);
        assert_eq!(got, [Item::Oversized { limit: 64 }, ev(None, Some("ok"), None)]);
    }
    // Several lines that add up past the limit.
    let many = format!("{}\ndata: ok\n\n", "data: 0123456789\n".repeat(10));
    assert_eq!(
        decode(64, &[many.as_bytes()]),
        [Item::Oversized { limit: 64 }, ev(None, Some("ok"), None)]
    );
    // A line with no end never grows the buffer past the limit.
    let mut d = Decoder::new(64);
    let mut out = Vec::new();
    for _ in 0..1000 {
        d.feed(&[b'y'; 1000], &mut out);
    }
    assert!(d.pending() <= 64, "{}", d.pending());
    assert_eq!(out, [Item::Oversized { limit: 64 }]);
}

#[test]
fn encoding_writes_one_data_line_per_line() {
    let e = Event {
        event: Some("message".into()),
        data: Some("a\nb\r\nc".into()),
        id: Some("4".into()),
        retry: Some(10),
    };
    assert_eq!(
        String::from_utf8(encode(&e)).unwrap(),
        "event: message\nid: 4\nretry: 10\ndata: a\ndata: b\ndata: c\n\n"
    );
    assert_eq!(encode_comment(" ping"), b": ping\n");
    assert_eq!(encode_comment("a\r\nb"), b":ab\n");
}

/// An event stream made of blocks, comments and junk lines, with every
/// kind of line end.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[a-z]{0,3}: ?[^\r\n]{0,12}",
        "data: [^\r\n]{0,20}",
        ": ?[^\r\n]{0,8}",
        Just(String::new()),
        Just("id: 1\u{0}2".to_string()),
        Just("retry: 99".to_string()),
        Just("data: h\u{e9}\u{1f600}".to_string()),
    ];
    let end = prop_oneof![Just("\n"), Just("\r"), Just("\r\n")];
    (
        any::<bool>(),
        proptest::collection::vec((line, end), 0..24),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(bom, lines, junk)| {
            let mut s = if bom { vec![0xef, 0xbb, 0xbf] } else { vec![] };
            for (l, e) in lines {
                s.extend_from_slice(l.as_bytes());
                s.extend_from_slice(e.as_bytes());
            }
            s.extend_from_slice(&junk);
            s.extend_from_slice(b"\n\n");
            s
        })
}

fn event() -> impl Strategy<Value = Event> {
    (
        proptest::option::of("[^\r\n]{0,10}"),
        proptest::option::of("[^\r]{0,30}"),
        proptest::option::of("[^\r\n\u{0}]{0,10}"),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(event, data, id, retry)| Event {
            event,
            data,
            id,
            retry,
        })
        .prop_filter("a block with no field is a blank line", |e| !e.is_empty())
}

proptest! {
    #[test]
    fn any_chunking_decodes_to_the_same_items(
        s in stream(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        limit in prop_oneof![Just(1usize << 20), 8usize..80],
    ) {
        let whole = decode(limit, &[&s]);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(s.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for a in at {
            chunks.push(&s[prev..a]);
            prev = a;
        }
        chunks.push(&s[prev..]);
        prop_assert_eq!(decode(limit, &chunks), whole.clone());
        // One byte at a time, too.
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        prop_assert_eq!(decode(limit, &bytes), whole);
    }

    #[test]
    fn decoding_what_was_encoded_gives_the_events_back(
        events in proptest::collection::vec(event(), 0..8),
        comments in proptest::collection::vec("[^\r\n]{0,10}", 0..3),
    ) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for c in &comments {
            bytes.extend(encode_comment(c));
            want.push(Item::Comment(c.clone()));
        }
        for e in &events {
            bytes.extend(encode(e));
            want.push(Item::Event(e.clone()));
        }
        prop_assert_eq!(decode(1 << 20, &[&bytes]), want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        b in proptest::collection::vec(any::<u8>(), 0..512),
        limit in 1usize..64,
    ) {
        let mut d = Decoder::new(limit);
        let mut out = Vec::new();
        d.feed(&b, &mut out);
        prop_assert!(d.pending() <= limit + 1);
    }
}
