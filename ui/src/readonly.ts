// A read-only CodeMirror view of a policy, scrolled to and highlighting
// the lines that decided an event.

import { EditorState, RangeSetBuilder, StateEffect, StateField } from "@codemirror/state";
import { Decoration, DecorationSet, EditorView, lineNumbers } from "@codemirror/view";
import { syntaxHighlighting, defaultHighlightStyle } from "@codemirror/language";
import { cedar } from "./cedar";
import { cspNonce } from "./api";

const setLines = StateEffect.define<number[]>();
const deciding = Decoration.line({ class: "cm-deciding-line", attributes: { "data-testid": "deciding-line" } });

const marks = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(deco, tr) {
    for (const e of tr.effects) {
      if (e.is(setLines)) {
        const b = new RangeSetBuilder<Decoration>();
        for (const n of [...new Set(e.value)].sort((a, b) => a - b)) {
          if (n >= 1 && n <= tr.state.doc.lines) b.add(tr.state.doc.line(n).from, tr.state.doc.line(n).from, deciding);
        }
        return b.finish();
      }
    }
    return deco.map(tr.changes);
  },
  provide: (f) => EditorView.decorations.from(f),
});

/** Shows `text` read-only with `lines` (1-based) highlighted, the first scrolled into view. */
export function policyView(parent: HTMLElement, text: string, lines: number[]): EditorView {
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: text,
      extensions: [
        EditorView.cspNonce.of(cspNonce()),
        EditorState.readOnly.of(true),
        EditorView.editable.of(false),
        lineNumbers(),
        cedar,
        syntaxHighlighting(defaultHighlightStyle),
        marks,
        EditorView.contentAttributes.of({ "aria-label": "the policy that decided this event (read-only)" }),
      ],
    }),
  });
  const valid = lines.filter((n) => n >= 1 && n <= view.state.doc.lines);
  view.dispatch({
    effects: [
      setLines.of(valid),
      ...(valid.length ? [EditorView.scrollIntoView(view.state.doc.line(valid[0]).from, { y: "center" })] : []),
    ],
  });
  return view;
}
