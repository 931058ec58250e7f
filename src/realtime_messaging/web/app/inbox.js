import {
  start
} from "./chunk-YNGJCFSF.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
