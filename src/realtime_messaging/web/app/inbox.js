import {
  start
} from "./chunk-4PEGYOQM.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
