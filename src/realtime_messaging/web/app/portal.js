import {
  start
} from "./chunk-3PJDSBVR.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
