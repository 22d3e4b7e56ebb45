// Cedar syntax highlighting for CodeMirror 6: a StreamLanguage tokenizer
// (keywords, annotations, strings, entity references `Type::"id"`,
// comments, operators). Highlighting only; the server validates.

import { StreamLanguage, StringStream } from "@codemirror/language";

const KEYWORDS = new Set([
  "permit", "forbid", "when", "unless", "principal", "action", "resource",
  "context", "in", "has", "like", "is", "if", "then", "else",
]);
const ATOMS = new Set(["true", "false"]);

interface State {
  /** Inside a string that continues on the next line. */
  inString: boolean;
}

function token(stream: StringStream, state: State): string | null {
  if (state.inString) return readString(stream, state);
  if (stream.eatSpace()) return null;
  if (stream.match("//")) {
    stream.skipToEnd();
    return "comment";
  }
  const ch = stream.peek();
  if (ch === '"') {
    stream.next();
    state.inString = true;
    return readString(stream, state);
  }
  if (ch === "@") {
    stream.next();
    stream.match(/^[A-Za-z_][A-Za-z0-9_]*/);
    return "meta";
  }
  if (stream.match(/^[0-9]+/)) return "number";
  if (stream.match(/^(==|!=|<=|>=|&&|\|\||::|[<>!+\-*])/)) return "operator";
  // An entity type path: `Ns::Type` followed by `::"id"`.
  if (stream.match(/^[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*(?=::")/)) return "typeName";
  const word = stream.match(/^[A-Za-z_][A-Za-z0-9_]*/) as RegExpMatchArray | null;
  if (word) {
    const w = word[0];
    if (KEYWORDS.has(w)) return "keyword";
    if (ATOMS.has(w)) return "atom";
    return "variableName";
  }
  if (stream.match(/^[{}()[\],;.]/)) return "punctuation";
  stream.next();
  return null;
}

function readString(stream: StringStream, state: State): string {
  let escaped = false;
  for (;;) {
    const ch = stream.next();
    if (ch === undefined || ch === null) break;
    if (ch === '"' && !escaped) {
      state.inString = false;
      return "string";
    }
    escaped = !escaped && ch === "\\";
  }
  return "string";
}

/** The Cedar language for CodeMirror. */
export const cedar = StreamLanguage.define<State>({
  name: "cedar",
  startState: () => ({ inString: false }),
  token,
  languageData: { commentTokens: { line: "//" } },
});
