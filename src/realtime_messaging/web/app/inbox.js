import {
  start
} from "./chunk-UP2F2BFR.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
