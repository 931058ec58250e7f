import {
  start
} from "./chunk-KMZQC3UP.js";

// src/inbox.tsx
start({ side: "staff", storageKey: "rtm.inbox.token" });
