import {
  start
} from "./chunk-LXNNJRG6.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
