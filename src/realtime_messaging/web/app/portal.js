import {
  start
} from "./chunk-UP2F2BFR.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
