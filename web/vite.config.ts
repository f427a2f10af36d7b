import { defineConfig } from 'vite';

/// The devart to develop against: `devart serve` on its default address unless told otherwise.
const devart = process.env.DEVART_URL ?? 'http://127.0.0.1:8787';

export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    // The Content-Security-Policy allows no inline script: never inline the module preload helper.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    target: 'es2022',
  },
  server: {
    proxy: {
      '/graphql': { target: devart, ws: true },
      '/session': { target: devart },
    },
  },
});
