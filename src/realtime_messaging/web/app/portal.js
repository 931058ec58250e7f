import {
  start
} from "./chunk-NMAYIFNS.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
