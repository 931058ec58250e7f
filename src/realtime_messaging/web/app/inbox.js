import {
  start
} from "./chunk-3PJDSBVR.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
