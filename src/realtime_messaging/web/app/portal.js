import {
  start
} from "./chunk-LSU3EGR2.js";

// src/portal.tsx
start({ side: "customer", storageKey: "rtm.portal.token" });
