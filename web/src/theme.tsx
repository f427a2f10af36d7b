// Light and dark themes: the system's choice unless the viewer picked one, kept in this browser.

import { useState } from 'preact/hooks';

type Theme = 'system' | 'light' | 'dark';

const KEY = 'devart.theme';
const NEXT: Record<Theme, Theme> = { system: 'light', light: 'dark', dark: 'system' };
const SIGN: Record<Theme, string> = { system: '◑', light: '☀', dark: '☾' };
const NAME: Record<Theme, string> = { system: 'System', light: 'Light', dark: 'Dark' };

function stored(): Theme {
  const value = localStorage.getItem(KEY);
  return value === 'light' || value === 'dark' ? value : 'system';
}

/// Sets the theme on the document: `data-theme` wins over `prefers-color-scheme` in the CSS.
export function applyTheme(theme: Theme = stored()): void {
  if (theme === 'system') document.documentElement.removeAttribute('data-theme');
  else document.documentElement.setAttribute('data-theme', theme);
}

export function ThemeToggle() {
  const [theme, setTheme] = useState<Theme>(stored);
  const change = () => {
    const next = NEXT[theme];
    if (next === 'system') localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, next);
    applyTheme(next);
    setTheme(next);
  };
  return (
    <button
      type="button"
      class="quiet"
      data-theme-toggle
      onClick={change}
      aria-label={`Theme: ${NAME[theme].toLowerCase()}; change it`}
      title={`Theme: ${NAME[theme].toLowerCase()} (click to change)`}
    >
      <span aria-hidden="true">{SIGN[theme]}</span> {NAME[theme]}
    </button>
  );
}
