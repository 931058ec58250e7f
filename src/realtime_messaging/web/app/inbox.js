import {
  start
} from "./chunk-7QKL7XLO.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
