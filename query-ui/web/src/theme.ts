// Light and dark themes: the user's choice is kept in localStorage; without
// one the system preference applies.

type Theme = "light" | "dark";
const KEY = "periscope.theme";
const listeners: (() => void)[] = [];

/** The active theme. */
export function theme(): Theme {
  const saved = localStorage.getItem(KEY);
  if (saved === "light" || saved === "dark") return saved;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

/** Applies the active theme to the document. */
export function applyTheme(): void {
  document.documentElement.dataset.theme = theme();
}

/** Switches between light and dark. */
export function toggleTheme(): void {
  localStorage.setItem(KEY, theme() === "dark" ? "light" : "dark");
  applyTheme();
  listeners.forEach((l) => l());
}

/** Calls `f` when the theme changes; returns the unsubscribe. */
export function onThemeChange(f: () => void): () => void {
  listeners.push(f);
  return () => {
    const i = listeners.indexOf(f);
    if (i >= 0) listeners.splice(i, 1);
  };
}

/** A CSS variable of the active theme (for canvas drawing). */
export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
