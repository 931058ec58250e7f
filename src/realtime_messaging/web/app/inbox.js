import {
  start
} from "./chunk-D5XBPYTC.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
