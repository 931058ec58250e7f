import {
  start
} from "./chunk-GFRAIAYQ.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
