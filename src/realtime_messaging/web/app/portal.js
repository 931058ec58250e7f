import {
  start
} from "./chunk-FTOFLVBX.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
