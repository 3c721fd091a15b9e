// A page's state lives in the URL query string so that a view can be shared
// and the back button restores it. Each page declares its keys with defaults;
// only values that differ from the defaults are written, in declaration order.

/** String-valued state with the page's defaults as its shape. */
export type State = Record<string, string>;

/** Reads the keys of `defaults` from a query string. */
export function readState<T extends State>(search: string, defaults: T): T {
  const p = new URLSearchParams(search);
  const out: State = {};
  for (const k of Object.keys(defaults)) {
    const v = p.get(k);
    out[k] = v === null ? defaults[k] : v;
  }
  return out as T;
}

/** Writes a query string (with `?`, or empty) holding what differs from the defaults. */
export function writeState<T extends State>(state: T, defaults: T): string {
  const p = new URLSearchParams();
  for (const k of Object.keys(defaults)) {
    const v = state[k];
    if (v !== undefined && v !== defaults[k]) p.set(k, v);
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** The state with some keys changed. */
export function withChanges<T extends State>(state: T, changes: Partial<T>): T {
  return { ...state, ...changes };
}

/** Whether two states hold the same values for the keys of `defaults`. */
export function sameState<T extends State>(a: T, b: T, defaults: T): boolean {
  return Object.keys(defaults).every((k) => a[k] === b[k]);
}
