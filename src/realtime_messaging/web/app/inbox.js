import {
  start
} from "./chunk-LOWHES7A.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
