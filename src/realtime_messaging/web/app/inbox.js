import {
  start
} from "./chunk-LSU3EGR2.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
