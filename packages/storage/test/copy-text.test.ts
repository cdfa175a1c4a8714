// COPY text is built by a hand-written loop on the ingest path; it must stay exactly the
// format PostgreSQL reads: tab-separated fields, \N for null, backslash escapes.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { copyText } from "../src/sql.js";

const ESCAPES: Record<string, string> = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };

/** The plain reading of the format, to compare with. */
const reference = (rows: readonly (readonly (string | null)[])[]): string =>
  rows
    .map(
      (row) =>
        `${row.map((v) => (v === null ? "\\N" : v.replace(/[\\\t\n\r]/g, (c) => ESCAPES[c]!))).join("\t")}\n`,
    )
    .join("");

test("COPY text: fields, nulls and escapes as PostgreSQL reads them", () => {
  const value = fc.option(
    fc.oneof(
      fc.string(),
      fc.string({ unit: fc.constantFrom("\\", "\t", "\n", "\r", "N", "a", "é", "\u0000") }),
    ),
    { nil: null },
  );
  fc.assert(
    fc.property(fc.array(fc.array(value, { minLength: 1, maxLength: 6 }), { maxLength: 6 }), (rows) => {
      assert.equal(copyText(rows), reference(rows));
    }),
    { numRuns: 2000 },
  );
  assert.equal(copyText([["a\tb", null, "c\\d"]]), "a\\tb\t\\N\tc\\\\d\n");
});
