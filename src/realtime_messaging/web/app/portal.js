import {
  start
} from "./chunk-KMZQC3UP.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
