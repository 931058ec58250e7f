import {
  start
} from "./chunk-GFRAIAYQ.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
