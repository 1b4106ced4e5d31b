// The operator console (/console/) and the rider app (/rider/): two pages, one build.
// Hashed assets go to dist/console/assets/ (served immutable); every text file also gets
// .gz and .br siblings, which the wulian binary picks by Accept-Encoding.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { defineConfig, type Plugin } from "vite";

const COMPRESSIBLE = /\.(js|mjs|css|html|svg|json|webmanifest|txt|map)$/;

function precompress(outDir: string): Plugin {
  return {
    name: "wulian-precompress",
    apply: "build",
    closeBundle() {
      const walk = (dir: string): string[] =>
        readdirSync(dir).flatMap((name) => {
          const path = join(dir, name);
          return statSync(path).isDirectory() ? walk(path) : [path];
        });
      for (const file of walk(outDir)) {
        if (!COMPRESSIBLE.test(file)) continue;
        const raw = readFileSync(file);
        if (raw.length < 1024) continue;
        writeFileSync(`${file}.gz`, gzipSync(raw, { level: 9 }));
        writeFileSync(
          `${file}.br`,
          brotliCompressSync(raw, {
            params: {
              [constants.BROTLI_PARAM_QUALITY]: 11,
              [constants.BROTLI_PARAM_SIZE_HINT]: raw.length,
            },
          }),
        );
      }
    },
  };
}

const outDir = resolve(import.meta.dirname, "dist");

export default defineConfig({
  root: resolve(import.meta.dirname, "pages"),
  publicDir: resolve(import.meta.dirname, "public"),
  base: "/",
  build: {
    outDir,
    emptyOutDir: true,
    assetsDir: "console/assets",
    target: "es2022",
    chunkSizeWarningLimit: 1200,
    // Every browser that runs MapLibre supports modulepreload.
    modulePreload: { polyfill: false },
    rollupOptions: {
      input: {
        console: resolve(import.meta.dirname, "pages/console/index.html"),
        rider: resolve(import.meta.dirname, "pages/rider/index.html"),
      },
      output: {
        // What both apps share (Preact, i18n, API client, router, base styles) in one chunk
        // with a readable name; MapLibre and uPlot stay in their own lazily loaded chunks.
        manualChunks(id: string) {
          if (/node_modules\/preact\//.test(id) || id.includes("preload-helper")) return "shared";
          if (/src\/common\/(?!mapkit)/.test(id)) return "shared";
          return undefined;
        },
      },
    },
  },
  server: {
    // `npm run dev` against a running `wulian demo` on the default port.
    proxy: { "/api": "http://127.0.0.1:8080" },
  },
  plugins: [precompress(outDir)],
});
