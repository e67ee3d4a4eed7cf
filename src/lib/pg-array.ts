/**
 * A PostgreSQL array literal of text elements (cast in SQL to the column's array type): each element
 * double-quoted, with backslash and double quote escaped; null is NULL. Built in one pass: node-postgres
 * would serialize an array element by element with two regex passes each (bench/HISTORY.md, `pgArray`).
 */
export function pgArray(values: ReadonlyArray<string | null>): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    if (v === null || v === undefined) out += 'NULL';
    else if (v.indexOf('"') < 0 && v.indexOf('\\') < 0) out += '"' + v + '"';
    else out += '"' + v.replace(/[\\"]/g, '\\$&') + '"';
  }
  return out + '}';
}
