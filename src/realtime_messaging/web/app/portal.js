import {
  start
} from "./chunk-7QKL7XLO.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
