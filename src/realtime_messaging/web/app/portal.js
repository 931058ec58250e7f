import {
  start
} from "./chunk-YNGJCFSF.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
