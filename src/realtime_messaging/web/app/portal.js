import {
  start
} from "./chunk-4PEGYOQM.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
