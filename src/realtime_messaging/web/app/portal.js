import {
  start
} from "./chunk-LXNNJRG6.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
