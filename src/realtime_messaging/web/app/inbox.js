import {
  start
} from "./chunk-FTOFLVBX.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
