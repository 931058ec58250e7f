import {
  start
} from "./chunk-NMAYIFNS.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
