import {
  start
} from "./chunk-D5XBPYTC.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
