import {
  start
} from "./chunk-LOWHES7A.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
