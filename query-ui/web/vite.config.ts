/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// `npm run dev` proxies the APIs to a running collector (PERISCOPE_URL,
// default http://127.0.0.1:8080); `npm run build` writes dist/, which the
// `periscope` binary embeds.
const target = process.env.PERISCOPE_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  build: {
    outDir: "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 900,
    sourcemap: false,
  },
  server: {
    proxy: {
      "/api": target,
      "/prometheus": target,
    },
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
});
