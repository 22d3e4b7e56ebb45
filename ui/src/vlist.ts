// A fixed-row-height virtual list. Every row has the same height, so the
// visible slice is two divisions: no measuring, no dependency (a general
// virtualiser such as @tanstack/virtual-core measures variable rows, which
// this list does not have). Only the visible rows (plus a few) exist in the
// DOM; their nodes are reused as the list scrolls.
//
// Keyboard: the scroller is one tab stop (role=listbox) with an active row
// (aria-activedescendant); ArrowUp/Down, PageUp/Down, Home/End move it,
// Enter/Space opens it.

/** What the list shows. */
export interface VListSource<T> {
  /** The number of rows. */
  length(): number;
  /** Row `i`. */
  at(i: number): T;
  /** Fills a row's node for `item` (the node is reused for other items). */
  render(node: HTMLElement, item: T, index: number): void;
  /** A stable DOM id for `item`'s row (for aria-activedescendant). */
  key(item: T): string;
  /** Enter/Space/click on a row. */
  open(item: T, index: number): void;
}

/** The virtual list. */
export class VList<T> {
  readonly scroller: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly pool: HTMLElement[] = [];
  private active = -1;
  private frame = 0;
  /** True while the view is at the bottom: new rows keep it there. */
  following = true;

  constructor(private readonly src: VListSource<T>, readonly rowHeight: number, label: string) {
    this.scroller = document.createElement("div");
    this.scroller.className = "vlist";
    this.scroller.tabIndex = 0;
    this.scroller.setAttribute("role", "listbox");
    this.scroller.setAttribute("aria-label", label);
    this.scroller.dataset.testid = "event-list";
    this.spacer = document.createElement("div");
    this.spacer.className = "vlist-spacer";
    this.scroller.append(this.spacer);
    this.scroller.addEventListener("scroll", () => {
      const el = this.scroller;
      this.following = el.scrollTop + el.clientHeight >= el.scrollHeight - this.rowHeight;
      this.schedule();
    });
    this.scroller.addEventListener("keydown", (e) => this.key(e));
    this.scroller.addEventListener("click", (e) => {
      const row = (e.target as HTMLElement).closest<HTMLElement>(".vrow");
      if (!row || row.dataset.index === undefined) return;
      const i = Number(row.dataset.index);
      this.setActive(i);
      this.src.open(this.src.at(i), i);
    });
    new ResizeObserver(() => this.schedule()).observe(this.scroller);
  }

  /** The data changed (rows added, removed or filtered): redraw. */
  refresh(): void {
    const n = this.src.length();
    if (this.active >= n) this.active = n - 1;
    this.spacer.style.height = `${n * this.rowHeight}px`;
    // Rows drawn for the old data may still sit below the new end (they
    // count in scrollHeight until redrawn): aim at the spacer's end, and
    // draw() clamps to it too.
    if (this.following) this.scroller.scrollTop = n * this.rowHeight;
    this.schedule();
  }

  /** Rows were dropped from the front (memory cap): keep the view on the same rows. */
  droppedFront(count: number): void {
    if (this.active >= 0) this.active = Math.max(-1, this.active - count);
    if (!this.following) this.scroller.scrollTop = Math.max(0, this.scroller.scrollTop - count * this.rowHeight);
  }

  /** Scrolls so row `i` is visible. */
  reveal(i: number): void {
    const top = i * this.rowHeight;
    const el = this.scroller;
    if (top < el.scrollTop) el.scrollTop = top;
    else if (top + this.rowHeight > el.scrollTop + el.clientHeight) {
      el.scrollTop = top + this.rowHeight - el.clientHeight;
    }
    this.draw();
  }

  /** The active row's index, or -1. */
  activeIndex(): number {
    return this.active;
  }

  /** Makes row `i` the active one (clamped) and reveals it. */
  setActive(i: number): void {
    const n = this.src.length();
    if (n === 0) {
      this.active = -1;
      this.scroller.removeAttribute("aria-activedescendant");
      return;
    }
    this.active = Math.min(Math.max(i, 0), n - 1);
    this.reveal(this.active);
  }

  private key(e: KeyboardEvent): void {
    const n = this.src.length();
    if (n === 0) return;
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / this.rowHeight) - 1);
    const cur = this.active < 0 ? this.firstVisible() : this.active;
    let next: number | null = null;
    switch (e.key) {
      case "ArrowDown": next = this.active < 0 ? cur : cur + 1; break;
      case "ArrowUp": next = cur - 1; break;
      case "PageDown": next = cur + page; break;
      case "PageUp": next = cur - page; break;
      case "Home": next = 0; break;
      case "End": next = n - 1; break;
      case "Enter": case " ":
        if (this.active >= 0) {
          e.preventDefault();
          this.src.open(this.src.at(this.active), this.active);
        }
        return;
      default: return;
    }
    e.preventDefault();
    this.setActive(next);
  }

  private firstVisible(): number {
    return Math.floor(this.scroller.scrollTop / this.rowHeight);
  }

  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  private draw(): void {
    const n = this.src.length();
    const h = this.rowHeight;
    const height = this.scroller.clientHeight;
    const top = Math.min(this.scroller.scrollTop, Math.max(0, n * h - height));
    const first = Math.max(0, Math.floor(top / h) - 5);
    const last = Math.min(n, Math.ceil((top + height) / h) + 5);
    const count = Math.max(0, last - first);
    while (this.pool.length < count) {
      const row = document.createElement("div");
      row.className = "vrow";
      row.setAttribute("role", "option");
      this.scroller.append(row);
      this.pool.push(row);
    }
    let activeId: string | null = null;
    for (let k = 0; k < this.pool.length; k++) {
      const row = this.pool[k];
      if (k >= count) {
        row.hidden = true;
        row.removeAttribute("id");
        continue;
      }
      const i = first + k;
      const item = this.src.at(i);
      row.hidden = false;
      row.dataset.index = String(i);
      row.id = this.src.key(item);
      row.style.transform = `translateY(${i * h}px)`;
      const isActive = i === this.active;
      row.classList.toggle("active", isActive);
      row.setAttribute("aria-selected", isActive ? "true" : "false");
      if (isActive) activeId = row.id;
      this.src.render(row, item, i);
    }
    if (activeId) this.scroller.setAttribute("aria-activedescendant", activeId);
    else this.scroller.removeAttribute("aria-activedescendant");
  }
}
