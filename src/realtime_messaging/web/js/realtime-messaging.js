// node_modules/@supabase/realtime-js/dist/module/lib/websocket-factory.js
var WebSocketFactory = class {
  /**
   * Static-only utility – prevent instantiation.
   */
  constructor() {
  }
  static detectEnvironment() {
    var _a;
    if (typeof WebSocket !== "undefined") {
      return { type: "native", wsConstructor: WebSocket };
    }
    const gt = globalThis;
    if (typeof globalThis !== "undefined" && typeof gt.WebSocket !== "undefined") {
      return { type: "native", wsConstructor: gt.WebSocket };
    }
    const gl = typeof global !== "undefined" ? global : void 0;
    if (gl && typeof gl.WebSocket !== "undefined") {
      return { type: "native", wsConstructor: gl.WebSocket };
    }
    if (typeof globalThis !== "undefined" && typeof gt.WebSocketPair !== "undefined" && typeof globalThis.WebSocket === "undefined") {
      return {
        type: "cloudflare",
        error: "Cloudflare Workers detected. WebSocket clients are not supported in Cloudflare Workers.",
        workaround: "Use Cloudflare Workers WebSocket API for server-side WebSocket handling, or deploy to a different runtime."
      };
    }
    if (typeof globalThis !== "undefined" && gt.EdgeRuntime || typeof navigator !== "undefined" && ((_a = navigator.userAgent) === null || _a === void 0 ? void 0 : _a.includes("Vercel-Edge"))) {
      return {
        type: "unsupported",
        error: "Edge runtime detected (Vercel Edge/Netlify Edge). WebSockets are not supported in edge functions.",
        workaround: "Use serverless functions or a different deployment target for WebSocket functionality."
      };
    }
    const _process = globalThis["process"];
    if (_process) {
      const processVersions = _process["versions"];
      if (processVersions && processVersions["node"]) {
        return {
          type: "unsupported",
          error: "Node.js detected but native WebSocket not found.",
          workaround: "Ensure you are running Node.js 22+ or provide a WebSocket implementation via the transport option."
        };
      }
    }
    return {
      type: "unsupported",
      error: "Unknown JavaScript runtime without WebSocket support.",
      workaround: "Ensure you're running in a supported environment (browser, Node.js, Deno) or provide a custom WebSocket implementation."
    };
  }
  /**
   * Returns the best available WebSocket constructor for the current runtime.
   *
   * @category Realtime
   *
   * @example Example with error handling
   * ```ts
   * try {
   *   const WS = WebSocketFactory.getWebSocketConstructor()
   *   const socket = new WS('wss://example.com/socket')
   * } catch (error) {
   *   console.error('WebSocket not available in this environment.', error)
   * }
   * ```
   */
  static getWebSocketConstructor() {
    const env = this.detectEnvironment();
    if (env.wsConstructor) {
      return env.wsConstructor;
    }
    let errorMessage = env.error || "WebSocket not supported in this environment.";
    if (env.workaround) {
      errorMessage += `

Suggested solution: ${env.workaround}`;
    }
    throw new Error(errorMessage);
  }
  /**
   * Detects whether the runtime can establish WebSocket connections.
   *
   * @category Realtime
   *
   * @example Example in a Node.js script
   * ```ts
   * if (!WebSocketFactory.isWebSocketSupported()) {
   *   console.error('WebSockets are required for this script.')
   *   process.exitCode = 1
   * }
   * ```
   */
  static isWebSocketSupported() {
    try {
      const env = this.detectEnvironment();
      return env.type === "native";
    } catch (_a) {
      return false;
    }
  }
};
var websocket_factory_default = WebSocketFactory;

// node_modules/@supabase/realtime-js/dist/module/lib/version.js
var version = "2.119.0";

// node_modules/@supabase/realtime-js/dist/module/lib/constants.js
var DEFAULT_VERSION = `realtime-js/${version}`;
var VSN_1_0_0 = "1.0.0";
var VSN_2_0_0 = "2.0.0";
var DEFAULT_VSN = VSN_2_0_0;
var DEFAULT_TIMEOUT = 1e4;
var DEFAULT_POSTGRES_CHANGES_WAIT_TIMEOUT = 15e3;
var POSTGRES_CHANGES_WAIT_ERROR_GRACE = 1e4;
var MAX_PUSH_BUFFER_SIZE = 100;
var CHANNEL_STATES = {
  closed: "closed",
  errored: "errored",
  joined: "joined",
  joining: "joining",
  leaving: "leaving"
};
var CHANNEL_EVENTS = {
  close: "phx_close",
  error: "phx_error",
  join: "phx_join",
  reply: "phx_reply",
  leave: "phx_leave",
  access_token: "access_token"
};
var CONNECTION_STATE = {
  connecting: "connecting",
  open: "open",
  closing: "closing",
  closed: "closed"
};

// node_modules/@supabase/realtime-js/dist/module/lib/serializer.js
var Serializer = class _Serializer {
  constructor(allowedMetadataKeys) {
    this.HEADER_LENGTH = 1;
    this.USER_BROADCAST_PUSH_META_LENGTH = 6;
    this.KINDS = { userBroadcastPush: 3, userBroadcast: 4 };
    this.BINARY_ENCODING = 0;
    this.JSON_ENCODING = 1;
    this.BROADCAST_EVENT = "broadcast";
    this.allowedMetadataKeys = _Serializer.DEFAULT_METADATA_KEYS;
    this.allowedMetadataKeys = allowedMetadataKeys !== null && allowedMetadataKeys !== void 0 ? allowedMetadataKeys : _Serializer.DEFAULT_METADATA_KEYS;
  }
  encode(msg, callback) {
    if (msg.event === this.BROADCAST_EVENT && !(msg.payload instanceof ArrayBuffer) && typeof msg.payload.event === "string") {
      return callback(this._binaryEncodeUserBroadcastPush(msg));
    }
    let payload = [msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload];
    return callback(JSON.stringify(payload));
  }
  _binaryEncodeUserBroadcastPush(message) {
    var _a;
    if (this._isArrayBuffer((_a = message.payload) === null || _a === void 0 ? void 0 : _a.payload)) {
      return this._encodeBinaryUserBroadcastPush(message);
    } else {
      return this._encodeJsonUserBroadcastPush(message);
    }
  }
  _encodeBinaryUserBroadcastPush(message) {
    var _a, _b;
    const userPayload = (_b = (_a = message.payload) === null || _a === void 0 ? void 0 : _a.payload) !== null && _b !== void 0 ? _b : new ArrayBuffer(0);
    return this._encodeUserBroadcastPush(message, this.BINARY_ENCODING, userPayload);
  }
  _encodeJsonUserBroadcastPush(message) {
    var _a, _b;
    const userPayload = (_b = (_a = message.payload) === null || _a === void 0 ? void 0 : _a.payload) !== null && _b !== void 0 ? _b : {};
    const encoder = new TextEncoder();
    const encodedUserPayload = encoder.encode(JSON.stringify(userPayload)).buffer;
    return this._encodeUserBroadcastPush(message, this.JSON_ENCODING, encodedUserPayload);
  }
  _encodeUserBroadcastPush(message, encodingType, encodedPayload) {
    var _a, _b;
    const encoder = new TextEncoder();
    const topic = encoder.encode(message.topic);
    const ref = encoder.encode((_a = message.ref) !== null && _a !== void 0 ? _a : "");
    const joinRef = encoder.encode((_b = message.join_ref) !== null && _b !== void 0 ? _b : "");
    const userEvent = encoder.encode(message.payload.event);
    const rest = this.allowedMetadataKeys ? this._pick(message.payload, this.allowedMetadataKeys) : {};
    const metadata = encoder.encode(Object.keys(rest).length === 0 ? "" : JSON.stringify(rest));
    if (joinRef.length > 255) {
      throw new Error(`joinRef length ${joinRef.length} exceeds maximum of 255`);
    }
    if (ref.length > 255) {
      throw new Error(`ref length ${ref.length} exceeds maximum of 255`);
    }
    if (topic.length > 255) {
      throw new Error(`topic length ${topic.length} exceeds maximum of 255`);
    }
    if (userEvent.length > 255) {
      throw new Error(`userEvent length ${userEvent.length} exceeds maximum of 255`);
    }
    if (metadata.length > 255) {
      throw new Error(`metadata length ${metadata.length} exceeds maximum of 255`);
    }
    const metaLength = this.USER_BROADCAST_PUSH_META_LENGTH + joinRef.length + ref.length + topic.length + userEvent.length + metadata.length;
    const header = new ArrayBuffer(this.HEADER_LENGTH + metaLength);
    const view = new DataView(header);
    const bytes = new Uint8Array(header);
    let offset = 0;
    view.setUint8(offset++, this.KINDS.userBroadcastPush);
    view.setUint8(offset++, joinRef.length);
    view.setUint8(offset++, ref.length);
    view.setUint8(offset++, topic.length);
    view.setUint8(offset++, userEvent.length);
    view.setUint8(offset++, metadata.length);
    view.setUint8(offset++, encodingType);
    bytes.set(joinRef, offset);
    offset += joinRef.length;
    bytes.set(ref, offset);
    offset += ref.length;
    bytes.set(topic, offset);
    offset += topic.length;
    bytes.set(userEvent, offset);
    offset += userEvent.length;
    bytes.set(metadata, offset);
    offset += metadata.length;
    var combined = new Uint8Array(header.byteLength + encodedPayload.byteLength);
    combined.set(new Uint8Array(header), 0);
    combined.set(new Uint8Array(encodedPayload), header.byteLength);
    return combined.buffer;
  }
  decode(rawPayload, callback) {
    if (this._isArrayBuffer(rawPayload)) {
      let result = this._binaryDecode(rawPayload);
      return callback(result);
    }
    if (typeof rawPayload === "string") {
      const jsonPayload = JSON.parse(rawPayload);
      const [join_ref, ref, topic, event, payload] = jsonPayload;
      return callback({ join_ref, ref, topic, event, payload });
    }
    return callback({});
  }
  _binaryDecode(buffer) {
    const view = new DataView(buffer);
    const kind = view.getUint8(0);
    const decoder = new TextDecoder();
    switch (kind) {
      case this.KINDS.userBroadcast:
        return this._decodeUserBroadcast(buffer, view, decoder);
    }
  }
  _decodeUserBroadcast(buffer, view, decoder) {
    const topicSize = view.getUint8(1);
    const userEventSize = view.getUint8(2);
    const metadataSize = view.getUint8(3);
    const payloadEncoding = view.getUint8(4);
    let offset = this.HEADER_LENGTH + 4;
    const topic = decoder.decode(buffer.slice(offset, offset + topicSize));
    offset = offset + topicSize;
    const userEvent = decoder.decode(buffer.slice(offset, offset + userEventSize));
    offset = offset + userEventSize;
    const metadata = decoder.decode(buffer.slice(offset, offset + metadataSize));
    offset = offset + metadataSize;
    const payload = buffer.slice(offset, buffer.byteLength);
    const parsedPayload = payloadEncoding === this.JSON_ENCODING ? JSON.parse(decoder.decode(payload)) : payload;
    const data = {
      type: this.BROADCAST_EVENT,
      event: userEvent,
      payload: parsedPayload
    };
    if (metadataSize > 0) {
      data["meta"] = JSON.parse(metadata);
    }
    return { join_ref: null, ref: null, topic, event: this.BROADCAST_EVENT, payload: data };
  }
  _isArrayBuffer(buffer) {
    var _a;
    return buffer instanceof ArrayBuffer || ((_a = buffer === null || buffer === void 0 ? void 0 : buffer.constructor) === null || _a === void 0 ? void 0 : _a.name) === "ArrayBuffer";
  }
  _pick(obj, keys) {
    if (!obj || typeof obj !== "object") {
      return {};
    }
    return Object.fromEntries(Object.entries(obj).filter(([key]) => keys.includes(key)));
  }
};
Serializer.DEFAULT_METADATA_KEYS = ["persist"];
var serializer_default = Serializer;

// node_modules/@supabase/realtime-js/dist/module/lib/transformers.js
var PostgresTypes;
(function(PostgresTypes2) {
  PostgresTypes2["abstime"] = "abstime";
  PostgresTypes2["bool"] = "bool";
  PostgresTypes2["date"] = "date";
  PostgresTypes2["daterange"] = "daterange";
  PostgresTypes2["float4"] = "float4";
  PostgresTypes2["float8"] = "float8";
  PostgresTypes2["int2"] = "int2";
  PostgresTypes2["int4"] = "int4";
  PostgresTypes2["int4range"] = "int4range";
  PostgresTypes2["int8"] = "int8";
  PostgresTypes2["int8range"] = "int8range";
  PostgresTypes2["json"] = "json";
  PostgresTypes2["jsonb"] = "jsonb";
  PostgresTypes2["money"] = "money";
  PostgresTypes2["numeric"] = "numeric";
  PostgresTypes2["oid"] = "oid";
  PostgresTypes2["reltime"] = "reltime";
  PostgresTypes2["text"] = "text";
  PostgresTypes2["time"] = "time";
  PostgresTypes2["timestamp"] = "timestamp";
  PostgresTypes2["timestamptz"] = "timestamptz";
  PostgresTypes2["timetz"] = "timetz";
  PostgresTypes2["tsrange"] = "tsrange";
  PostgresTypes2["tstzrange"] = "tstzrange";
})(PostgresTypes || (PostgresTypes = {}));
var convertChangeData = (columns, record, options = {}) => {
  var _a;
  const skipTypes = (_a = options.skipTypes) !== null && _a !== void 0 ? _a : [];
  if (!record) {
    return {};
  }
  return Object.keys(record).reduce((acc, rec_key) => {
    acc[rec_key] = convertColumn(rec_key, columns, record, skipTypes);
    return acc;
  }, {});
};
var convertColumn = (columnName, columns, record, skipTypes) => {
  const column = columns.find((x) => x.name === columnName);
  const colType = column === null || column === void 0 ? void 0 : column.type;
  const value = record[columnName];
  if (colType && !skipTypes.includes(colType)) {
    return convertCell(colType, value);
  }
  return noop(value);
};
var convertCell = (type, value) => {
  if (type.charAt(0) === "_") {
    const dataType = type.slice(1, type.length);
    return toArray(value, dataType);
  }
  switch (type) {
    case PostgresTypes.bool:
      return toBoolean(value);
    case PostgresTypes.float4:
    case PostgresTypes.float8:
    case PostgresTypes.int2:
    case PostgresTypes.int4:
    case PostgresTypes.int8:
    case PostgresTypes.numeric:
    case PostgresTypes.oid:
      return toNumber(value);
    case PostgresTypes.json:
    case PostgresTypes.jsonb:
      return toJson(value);
    case PostgresTypes.timestamp:
      return toTimestampString(value);
    // Format to be consistent with PostgREST
    case PostgresTypes.abstime:
    // To allow users to cast it based on Timezone
    case PostgresTypes.date:
    // To allow users to cast it based on Timezone
    case PostgresTypes.daterange:
    case PostgresTypes.int4range:
    case PostgresTypes.int8range:
    case PostgresTypes.money:
    case PostgresTypes.reltime:
    // To allow users to cast it based on Timezone
    case PostgresTypes.text:
    case PostgresTypes.time:
    // To allow users to cast it based on Timezone
    case PostgresTypes.timestamptz:
    // To allow users to cast it based on Timezone
    case PostgresTypes.timetz:
    // To allow users to cast it based on Timezone
    case PostgresTypes.tsrange:
    case PostgresTypes.tstzrange:
      return noop(value);
    default:
      return noop(value);
  }
};
var noop = (value) => {
  return value;
};
var toBoolean = (value) => {
  switch (value) {
    case "t":
      return true;
    case "f":
      return false;
    default:
      return value;
  }
};
var toNumber = (value) => {
  if (typeof value === "string") {
    const parsedValue = parseFloat(value);
    if (!Number.isNaN(parsedValue)) {
      return parsedValue;
    }
  }
  return value;
};
var toJson = (value) => {
  if (typeof value === "string") {
    try {
      return JSON.parse(value);
    } catch (_a) {
      return value;
    }
  }
  return value;
};
var toArray = (value, type) => {
  if (typeof value !== "string") {
    return value;
  }
  const lastIdx = value.length - 1;
  const closeBrace = value[lastIdx];
  const openBrace = value[0];
  if (openBrace === "{" && closeBrace === "}") {
    let arr;
    const valTrim = value.slice(1, lastIdx);
    try {
      arr = JSON.parse("[" + valTrim + "]");
    } catch (_) {
      arr = valTrim ? valTrim.split(",") : [];
    }
    return arr.map((val) => convertCell(type, val));
  }
  return value;
};
var toTimestampString = (value) => {
  if (typeof value === "string") {
    return value.replace(" ", "T");
  }
  return value;
};
var httpEndpointURL = (socketUrl2) => {
  const wsUrl = new URL(socketUrl2);
  wsUrl.protocol = wsUrl.protocol.replace(/^ws/i, "http");
  wsUrl.pathname = wsUrl.pathname.replace(/\/+$/, "").replace(/\/socket\/websocket$/i, "").replace(/\/socket$/i, "").replace(/\/websocket$/i, "");
  if (wsUrl.pathname === "" || wsUrl.pathname === "/") {
    wsUrl.pathname = "/api/broadcast";
  } else {
    wsUrl.pathname = wsUrl.pathname + "/api/broadcast";
  }
  return wsUrl.href;
};

// node_modules/@supabase/phoenix/priv/static/phoenix.mjs
var closure = (value) => {
  if (typeof value === "function") {
    return (
      /** @type {() => T} */
      value
    );
  } else {
    let closure2 = function() {
      return value;
    };
    return closure2;
  }
};
var globalSelf = typeof self !== "undefined" ? self : null;
var phxWindow = typeof window !== "undefined" ? window : null;
var global2 = globalSelf || phxWindow || globalThis;
var DEFAULT_VSN2 = "2.0.0";
var DEFAULT_TIMEOUT2 = 1e4;
var WS_CLOSE_NORMAL = 1e3;
var MAX_LONGPOLL_BATCH_SIZE = 100;
var SOCKET_STATES = (
  /** @type {const} */
  { connecting: 0, open: 1, closing: 2, closed: 3 }
);
var CHANNEL_STATES2 = (
  /** @type {const} */
  {
    closed: "closed",
    errored: "errored",
    joined: "joined",
    joining: "joining",
    leaving: "leaving"
  }
);
var CHANNEL_EVENTS2 = (
  /** @type {const} */
  {
    close: "phx_close",
    error: "phx_error",
    join: "phx_join",
    reply: "phx_reply",
    leave: "phx_leave"
  }
);
var TRANSPORTS = (
  /** @type {const} */
  {
    longpoll: "longpoll",
    websocket: "websocket"
  }
);
var XHR_STATES = (
  /** @type {const} */
  {
    complete: 4
  }
);
var AUTH_TOKEN_PREFIX = "base64url.bearer.phx.";
var Push = class {
  /**
   * Initializes the Push
   * @param {Channel} channel - The Channel
   * @param {ChannelEvent} event - The event, for example `"phx_join"`
   * @param {() => Record<string, unknown>} payload - The payload, for example `{user_id: 123}`
   * @param {number} timeout - The push timeout in milliseconds
   */
  constructor(channel, event, payload, timeout) {
    this.channel = channel;
    this.event = event;
    this.payload = payload || function() {
      return {};
    };
    this.receivedResp = null;
    this.timeout = timeout;
    this.timeoutTimer = null;
    this.recHooks = [];
    this.sent = false;
    this.ref = void 0;
  }
  /**
   *
   * @param {number} timeout
   */
  resend(timeout) {
    this.timeout = timeout;
    this.reset();
    this.send();
  }
  /**
   *
   */
  send() {
    if (this.hasReceived("timeout")) {
      return;
    }
    this.startTimeout();
    this.sent = true;
    this.channel.socket.push({
      topic: this.channel.topic,
      event: this.event,
      payload: this.payload(),
      ref: this.ref,
      join_ref: this.channel.joinRef()
    });
  }
  /**
   *
   * @param {string} status
   * @param {(response: any) => void} callback
   */
  receive(status, callback) {
    if (this.hasReceived(status)) {
      callback(this.receivedResp.response);
    }
    this.recHooks.push({ status, callback });
    return this;
  }
  reset() {
    this.cancelRefEvent();
    this.ref = null;
    this.refEvent = null;
    this.receivedResp = null;
    this.sent = false;
  }
  destroy() {
    this.cancelRefEvent();
    this.cancelTimeout();
  }
  /**
   * @private
   */
  matchReceive({ status, response, _ref }) {
    this.recHooks.filter((h) => h.status === status).forEach((h) => h.callback(response));
  }
  /**
   * @private
   */
  cancelRefEvent() {
    if (!this.refEvent) {
      return;
    }
    this.channel.off(this.refEvent);
  }
  cancelTimeout() {
    clearTimeout(this.timeoutTimer);
    this.timeoutTimer = null;
  }
  startTimeout() {
    if (this.timeoutTimer) {
      this.cancelTimeout();
    }
    this.ref = this.channel.socket.makeRef();
    this.refEvent = this.channel.replyEventName(this.ref);
    this.channel.on(this.refEvent, (payload) => {
      this.cancelRefEvent();
      this.cancelTimeout();
      this.receivedResp = payload;
      this.matchReceive(payload);
    });
    this.timeoutTimer = setTimeout(() => {
      this.trigger("timeout", {});
    }, this.timeout);
  }
  /**
   * @private
   */
  hasReceived(status) {
    return this.receivedResp && this.receivedResp.status === status;
  }
  trigger(status, response) {
    this.channel.trigger(this.refEvent, { status, response });
  }
};
var Timer = class {
  /**
  * @param {() => void} callback
  * @param {(tries: number) => number} timerCalc
  */
  constructor(callback, timerCalc) {
    this.callback = callback;
    this.timerCalc = timerCalc;
    this.timer = void 0;
    this.tries = 0;
  }
  reset() {
    this.tries = 0;
    clearTimeout(this.timer);
  }
  /**
   * Cancels any previous scheduleTimeout and schedules callback
   */
  scheduleTimeout() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.tries = this.tries + 1;
      this.callback();
    }, this.timerCalc(this.tries + 1));
  }
};
var Channel = class {
  /**
   * @param {string} topic
   * @param {Params | (() => Params)} params
   * @param {Socket} socket
   */
  constructor(topic, params, socket) {
    this.state = CHANNEL_STATES2.closed;
    this.topic = topic;
    this.params = closure(params || {});
    this.socket = socket;
    this.bindings = [];
    this.bindingRef = 0;
    this.timeout = this.socket.timeout;
    this.joinedOnce = false;
    this.joinPush = new Push(this, CHANNEL_EVENTS2.join, this.params, this.timeout);
    this.pushBuffer = [];
    this.stateChangeRefs = [];
    this.rejoinTimer = new Timer(() => {
      if (this.socket.isConnected()) {
        this.rejoin();
      }
    }, this.socket.rejoinAfterMs);
    this.stateChangeRefs.push(this.socket.onError(() => this.rejoinTimer.reset()));
    this.stateChangeRefs.push(
      this.socket.onOpen(() => {
        this.rejoinTimer.reset();
        if (this.isErrored()) {
          this.rejoin();
        }
      })
    );
    this.joinPush.receive("ok", () => {
      this.state = CHANNEL_STATES2.joined;
      this.rejoinTimer.reset();
      this.pushBuffer.forEach((pushEvent) => pushEvent.send());
      this.pushBuffer = [];
    });
    this.joinPush.receive("error", (reason) => {
      this.state = CHANNEL_STATES2.errored;
      if (this.socket.hasLogger()) this.socket.log("channel", `error ${this.topic}`, reason);
      if (this.socket.isConnected()) {
        this.rejoinTimer.scheduleTimeout();
      }
    });
    this.onClose(() => {
      this.rejoinTimer.reset();
      if (this.socket.hasLogger()) this.socket.log("channel", `close ${this.topic}`);
      this.state = CHANNEL_STATES2.closed;
      this.socket.remove(this);
    });
    this.onError((reason) => {
      if (this.socket.hasLogger()) this.socket.log("channel", `error ${this.topic}`, reason);
      if (this.isJoining()) {
        this.joinPush.reset();
      }
      this.state = CHANNEL_STATES2.errored;
      if (this.socket.isConnected()) {
        this.rejoinTimer.scheduleTimeout();
      }
    });
    this.joinPush.receive("timeout", () => {
      if (this.socket.hasLogger()) this.socket.log("channel", `timeout ${this.topic}`, this.joinPush.timeout);
      let leavePush = new Push(this, CHANNEL_EVENTS2.leave, closure({}), this.timeout);
      leavePush.send();
      this.state = CHANNEL_STATES2.errored;
      this.joinPush.reset();
      if (this.socket.isConnected()) {
        this.rejoinTimer.scheduleTimeout();
      }
    });
    this.on(CHANNEL_EVENTS2.reply, (payload, ref) => {
      this.trigger(this.replyEventName(ref), payload);
    });
  }
  /**
   * Join the channel
   * @param {number} timeout
   * @returns {Push}
   */
  join(timeout = this.timeout) {
    if (this.joinedOnce) {
      throw new Error("tried to join multiple times. 'join' can only be called a single time per channel instance");
    } else {
      this.timeout = timeout;
      this.joinedOnce = true;
      this.rejoin();
      return this.joinPush;
    }
  }
  /**
   * Teardown the channel.
   *
   * Destroys and stops related timers.
   */
  teardown() {
    this.pushBuffer.forEach((push) => push.destroy());
    this.pushBuffer = [];
    this.rejoinTimer.reset();
    this.joinPush.destroy();
    this.state = CHANNEL_STATES2.closed;
    this.bindings = [];
  }
  /**
   * Hook into channel close
   * @param {ChannelBindingCallback} callback
   */
  onClose(callback) {
    this.on(CHANNEL_EVENTS2.close, callback);
  }
  /**
   * Hook into channel errors
   * @param {ChannelOnErrorCallback} callback
   * @return {number}
   */
  onError(callback) {
    return this.on(CHANNEL_EVENTS2.error, (reason) => callback(reason));
  }
  /**
   * Subscribes on channel events
   *
   * Subscription returns a ref counter, which can be used later to
   * unsubscribe the exact event listener
   *
   * @example
   * const ref1 = channel.on("event", do_stuff)
   * const ref2 = channel.on("event", do_other_stuff)
   * channel.off("event", ref1)
   * // Since unsubscription, do_stuff won't fire,
   * // while do_other_stuff will keep firing on the "event"
   *
   * @param {string} event
   * @param {ChannelBindingCallback} callback
   * @returns {number} ref
   */
  on(event, callback) {
    let ref = this.bindingRef++;
    this.bindings.push({ event, ref, callback });
    return ref;
  }
  /**
   * Unsubscribes off of channel events
   *
   * Use the ref returned from a channel.on() to unsubscribe one
   * handler, or pass nothing for the ref to unsubscribe all
   * handlers for the given event.
   *
   * @example
   * // Unsubscribe the do_stuff handler
   * const ref1 = channel.on("event", do_stuff)
   * channel.off("event", ref1)
   *
   * // Unsubscribe all handlers from event
   * channel.off("event")
   *
   * @param {string} event
   * @param {number} [ref]
   */
  off(event, ref) {
    this.bindings = this.bindings.filter((bind) => {
      return !(bind.event === event && (typeof ref === "undefined" || ref === bind.ref));
    });
  }
  /**
   * @private
   */
  canPush() {
    return this.socket.isConnected() && this.isJoined();
  }
  /**
   * Sends a message `event` to phoenix with the payload `payload`.
   * Phoenix receives this in the `handle_in(event, payload, socket)`
   * function. if phoenix replies or it times out (default 10000ms),
   * then optionally the reply can be received.
   *
   * @example
   * channel.push("event")
   *   .receive("ok", payload => console.log("phoenix replied:", payload))
   *   .receive("error", err => console.log("phoenix errored", err))
   *   .receive("timeout", () => console.log("timed out pushing"))
   * @param {string} event
   * @param {Object} payload
   * @param {number} [timeout]
   * @returns {Push}
   */
  push(event, payload, timeout = this.timeout) {
    payload = payload || {};
    if (!this.joinedOnce) {
      throw new Error(`tried to push '${event}' to '${this.topic}' before joining. Use channel.join() before pushing events`);
    }
    let pushEvent = new Push(this, event, function() {
      return payload;
    }, timeout);
    if (this.canPush()) {
      pushEvent.send();
    } else {
      pushEvent.startTimeout();
      this.pushBuffer.push(pushEvent);
    }
    return pushEvent;
  }
  /** Leaves the channel
   *
   * Unsubscribes from server events, and
   * instructs channel to terminate on server
   *
   * Triggers onClose() hooks
   *
   * To receive leave acknowledgements, use the `receive`
   * hook to bind to the server ack, ie:
   *
   * @example
   * channel.leave().receive("ok", () => alert("left!") )
   *
   * @param {number} timeout
   * @returns {Push}
   */
  leave(timeout = this.timeout) {
    this.rejoinTimer.reset();
    this.joinPush.cancelTimeout();
    this.state = CHANNEL_STATES2.leaving;
    let onClose = () => {
      if (this.socket.hasLogger()) this.socket.log("channel", `leave ${this.topic}`);
      this.trigger(CHANNEL_EVENTS2.close, "leave");
    };
    let leavePush = new Push(this, CHANNEL_EVENTS2.leave, closure({}), timeout);
    leavePush.receive("ok", () => onClose()).receive("timeout", () => onClose());
    leavePush.send();
    if (!this.canPush()) {
      leavePush.trigger("ok", {});
    }
    return leavePush;
  }
  /**
   * Overridable message hook
   *
   * Receives all events for specialized message handling
   * before dispatching to the channel callbacks.
   *
   * Must return the payload, modified or unmodified
   * @type{ChannelOnMessage}
   */
  onMessage(_event, payload, _ref) {
    return payload;
  }
  /**
   * Overridable filter hook
   *
   * If this function returns `true`, `binding`'s callback will be called.
   *
   * @type{ChannelFilterBindings}
   */
  filterBindings(_binding, _payload, _ref) {
    return true;
  }
  isMember(topic, event, payload, joinRef) {
    if (this.topic !== topic) {
      return false;
    }
    if (joinRef && joinRef !== this.joinRef()) {
      if (this.socket.hasLogger()) this.socket.log("channel", "dropping outdated message", { topic, event, payload, joinRef });
      return false;
    } else {
      return true;
    }
  }
  joinRef() {
    return this.joinPush.ref;
  }
  /**
   * @private
   */
  rejoin(timeout = this.timeout) {
    if (this.isLeaving()) {
      return;
    }
    this.socket.leaveOpenTopic(this.topic);
    this.state = CHANNEL_STATES2.joining;
    this.joinPush.resend(timeout);
  }
  /**
   * @param {string} event
   * @param {unknown} [payload]
   * @param {?string} [ref]
   * @param {?string} [joinRef]
   */
  trigger(event, payload, ref, joinRef) {
    let handledPayload = this.onMessage(event, payload, ref, joinRef);
    if (payload && !handledPayload) {
      throw new Error("channel onMessage callbacks must return the payload, modified or unmodified");
    }
    let eventBindings = this.bindings.filter((bind) => bind.event === event && this.filterBindings(bind, payload, ref));
    for (let i = 0; i < eventBindings.length; i++) {
      let bind = eventBindings[i];
      bind.callback(handledPayload, ref, joinRef || this.joinRef());
    }
  }
  /**
  * @param {string} ref
  */
  replyEventName(ref) {
    return `chan_reply_${ref}`;
  }
  isClosed() {
    return this.state === CHANNEL_STATES2.closed;
  }
  isErrored() {
    return this.state === CHANNEL_STATES2.errored;
  }
  isJoined() {
    return this.state === CHANNEL_STATES2.joined;
  }
  isJoining() {
    return this.state === CHANNEL_STATES2.joining;
  }
  isLeaving() {
    return this.state === CHANNEL_STATES2.leaving;
  }
};
var Ajax = class {
  static request(method, endPoint, headers, body, timeout, ontimeout, callback) {
    if (global2.XDomainRequest) {
      let req2 = new global2.XDomainRequest();
      return this.xdomainRequest(req2, method, endPoint, body, timeout, ontimeout, callback);
    } else if (global2.XMLHttpRequest) {
      let req2 = new global2.XMLHttpRequest();
      return this.xhrRequest(req2, method, endPoint, headers, body, timeout, ontimeout, callback);
    } else if (global2.fetch && global2.AbortController) {
      return this.fetchRequest(method, endPoint, headers, body, timeout, ontimeout, callback);
    } else {
      throw new Error("No suitable XMLHttpRequest implementation found");
    }
  }
  static fetchRequest(method, endPoint, headers, body, timeout, ontimeout, callback) {
    let options = {
      method,
      headers,
      body
    };
    let controller = null;
    if (timeout) {
      controller = new AbortController();
      const _timeoutId = setTimeout(() => controller.abort(), timeout);
      options.signal = controller.signal;
    }
    global2.fetch(endPoint, options).then((response) => response.text()).then((data) => this.parseJSON(data)).then((data) => callback && callback(data)).catch((err) => {
      if (err.name === "AbortError" && ontimeout) {
        ontimeout();
      } else {
        callback && callback(null);
      }
    });
    return controller;
  }
  static xdomainRequest(req2, method, endPoint, body, timeout, ontimeout, callback) {
    req2.timeout = timeout;
    req2.open(method, endPoint);
    req2.onload = () => {
      let response = this.parseJSON(req2.responseText);
      callback && callback(response);
    };
    if (ontimeout) {
      req2.ontimeout = ontimeout;
    }
    req2.onprogress = () => {
    };
    req2.send(body);
    return req2;
  }
  static xhrRequest(req2, method, endPoint, headers, body, timeout, ontimeout, callback) {
    req2.open(method, endPoint, true);
    req2.timeout = timeout;
    for (let [key, value] of Object.entries(headers)) {
      req2.setRequestHeader(key, value);
    }
    req2.onerror = () => callback && callback(null);
    req2.onreadystatechange = () => {
      if (req2.readyState === XHR_STATES.complete && callback) {
        let response = this.parseJSON(req2.responseText);
        callback(response);
      }
    };
    if (ontimeout) {
      req2.ontimeout = ontimeout;
    }
    req2.send(body);
    return req2;
  }
  static parseJSON(resp) {
    if (!resp || resp === "") {
      return null;
    }
    try {
      return JSON.parse(resp);
    } catch {
      console && console.log("failed to parse JSON response", resp);
      return null;
    }
  }
  static serialize(obj, parentKey) {
    let queryStr = [];
    for (var key in obj) {
      if (!Object.prototype.hasOwnProperty.call(obj, key)) {
        continue;
      }
      let paramKey = parentKey ? `${parentKey}[${key}]` : key;
      let paramVal = obj[key];
      if (typeof paramVal === "object") {
        queryStr.push(this.serialize(paramVal, paramKey));
      } else {
        queryStr.push(encodeURIComponent(paramKey) + "=" + encodeURIComponent(paramVal));
      }
    }
    return queryStr.join("&");
  }
  static appendParams(url, params) {
    if (Object.keys(params).length === 0) {
      return url;
    }
    let prefix = url.match(/\?/) ? "&" : "?";
    return `${url}${prefix}${this.serialize(params)}`;
  }
};
var arrayBufferToBase64 = (buffer) => {
  let binary = "";
  let bytes = new Uint8Array(buffer);
  let len = bytes.byteLength;
  for (let i = 0; i < len; i++) {
    binary += String.fromCharCode(bytes[i]);
  }
  return btoa(binary);
};
var LongPoll = class {
  constructor(endPoint, protocols) {
    if (protocols && protocols.length === 2 && protocols[1].startsWith(AUTH_TOKEN_PREFIX)) {
      this.authToken = atob(protocols[1].slice(AUTH_TOKEN_PREFIX.length));
    }
    this.endPoint = null;
    this.token = null;
    this.skipHeartbeat = true;
    this.reqs = /* @__PURE__ */ new Set();
    this.awaitingBatchAck = false;
    this.currentBatch = null;
    this.currentBatchTimer = null;
    this.batchBuffer = [];
    this.onopen = function() {
    };
    this.onerror = function() {
    };
    this.onmessage = function() {
    };
    this.onclose = function() {
    };
    this.pollEndpoint = this.normalizeEndpoint(endPoint);
    this.readyState = SOCKET_STATES.connecting;
    setTimeout(() => this.poll(), 0);
  }
  normalizeEndpoint(endPoint) {
    return endPoint.replace("ws://", "http://").replace("wss://", "https://").replace(new RegExp("(.*)/" + TRANSPORTS.websocket), "$1/" + TRANSPORTS.longpoll);
  }
  endpointURL() {
    return Ajax.appendParams(this.pollEndpoint, { token: this.token });
  }
  closeAndRetry(code, reason, wasClean) {
    this.close(code, reason, wasClean);
    this.readyState = SOCKET_STATES.connecting;
  }
  ontimeout() {
    this.onerror("timeout");
    this.closeAndRetry(1005, "timeout", false);
  }
  isActive() {
    return this.readyState === SOCKET_STATES.open || this.readyState === SOCKET_STATES.connecting;
  }
  poll() {
    const headers = { "Accept": "application/json" };
    if (this.authToken) {
      headers["X-Phoenix-AuthToken"] = this.authToken;
    }
    this.ajax("GET", headers, null, () => this.ontimeout(), (resp) => {
      if (resp) {
        var { status, token, messages } = resp;
        if (status === 410 && this.token !== null) {
          this.onerror(410);
          this.closeAndRetry(3410, "session_gone", false);
          return;
        }
        this.token = token;
      } else {
        status = 0;
      }
      switch (status) {
        case 200:
          messages.forEach((msg) => {
            setTimeout(() => this.onmessage({ data: msg }), 0);
          });
          this.poll();
          break;
        case 204:
          this.poll();
          break;
        case 410:
          this.readyState = SOCKET_STATES.open;
          this.onopen({});
          this.poll();
          break;
        case 403:
          this.onerror(403);
          this.close(1008, "forbidden", false);
          break;
        case 0:
        case 500:
          this.onerror(500);
          this.closeAndRetry(1011, "internal server error", 500);
          break;
        default:
          throw new Error(`unhandled poll status ${status}`);
      }
    });
  }
  // we collect all pushes within the current event loop by
  // setTimeout 0, which optimizes back-to-back procedural
  // pushes against an empty buffer
  send(body) {
    if (typeof body !== "string") {
      body = arrayBufferToBase64(body);
    }
    if (this.currentBatch) {
      this.currentBatch.push(body);
    } else if (this.awaitingBatchAck) {
      this.batchBuffer.push(body);
    } else {
      this.currentBatch = [body];
      this.currentBatchTimer = setTimeout(() => {
        this.batchSend(this.currentBatch);
        this.currentBatch = null;
      }, 0);
    }
  }
  batchSend(messages, offset = 0) {
    this.awaitingBatchAck = true;
    const next = offset + MAX_LONGPOLL_BATCH_SIZE;
    const batch = messages.slice(offset, next);
    this.ajax("POST", { "Content-Type": "application/x-ndjson" }, batch.join("\n"), () => this.onerror("timeout"), (resp) => {
      if (!resp || resp.status !== 200) {
        this.awaitingBatchAck = false;
        this.onerror(resp && resp.status);
        this.closeAndRetry(1011, "internal server error", false);
      } else if (next < messages.length) {
        this.batchSend(messages, next);
      } else if (this.batchBuffer.length > 0) {
        this.batchSend(this.batchBuffer);
        this.batchBuffer = [];
      } else {
        this.awaitingBatchAck = false;
      }
    });
  }
  close(code, reason, wasClean) {
    for (let req2 of this.reqs) {
      req2.abort();
    }
    this.readyState = SOCKET_STATES.closed;
    let opts = Object.assign({ code: 1e3, reason: void 0, wasClean: true }, { code, reason, wasClean });
    this.batchBuffer = [];
    clearTimeout(this.currentBatchTimer);
    this.currentBatchTimer = null;
    if (typeof CloseEvent !== "undefined") {
      this.onclose(new CloseEvent("close", opts));
    } else {
      this.onclose(opts);
    }
  }
  ajax(method, headers, body, onCallerTimeout, callback) {
    let req2;
    let ontimeout = () => {
      this.reqs.delete(req2);
      onCallerTimeout();
    };
    req2 = Ajax.request(method, this.endpointURL(), headers, body, this.timeout, ontimeout, (resp) => {
      this.reqs.delete(req2);
      if (this.isActive()) {
        callback(resp);
      }
    });
    this.reqs.add(req2);
  }
};
var Presence = class _Presence {
  /**
   * Initializes the Presence
   * @param {Channel} channel - The Channel
   * @param {PresenceOptions} [opts] - The options, for example `{events: {state: "state", diff: "diff"}}`
   */
  constructor(channel, opts = {}) {
    let events = opts.events || /** @type {PresenceEvents} */
    { state: "presence_state", diff: "presence_diff" };
    this.state = /* @__PURE__ */ Object.create(null);
    this.pendingDiffs = [];
    this.channel = channel;
    this.joinRef = null;
    this.caller = {
      onJoin: function() {
      },
      onLeave: function() {
      },
      onSync: function() {
      }
    };
    this.channel.on(events.state, (newState) => {
      let { onJoin, onLeave, onSync } = this.caller;
      this.joinRef = this.channel.joinRef();
      this.state = _Presence.syncState(this.state, newState, onJoin, onLeave);
      this.pendingDiffs.forEach((diff) => {
        this.state = _Presence.syncDiff(this.state, diff, onJoin, onLeave);
      });
      this.pendingDiffs = [];
      onSync();
    });
    this.channel.on(events.diff, (diff) => {
      let { onJoin, onLeave, onSync } = this.caller;
      if (this.inPendingSyncState()) {
        this.pendingDiffs.push(diff);
      } else {
        this.state = _Presence.syncDiff(this.state, diff, onJoin, onLeave);
        onSync();
      }
    });
  }
  /**
   * @param {PresenceOnJoin} callback
   */
  onJoin(callback) {
    this.caller.onJoin = callback;
  }
  /**
   * @param {PresenceOnLeave} callback
   */
  onLeave(callback) {
    this.caller.onLeave = callback;
  }
  /**
   * @param {PresenceOnSync} callback
   */
  onSync(callback) {
    this.caller.onSync = callback;
  }
  /**
   * Returns the array of presences, with selected metadata.
   *
   * @template [T=PresenceState]
   * @param {((key: string, obj: PresenceState) => T)} [by]
   *
   * @returns {T[]}
   */
  list(by) {
    return _Presence.list(this.state, by);
  }
  inPendingSyncState() {
    return !this.joinRef || this.joinRef !== this.channel.joinRef();
  }
  // lower-level public static API
  /**
   * Used to sync the list of presences on the server
   * with the client's state. An optional `onJoin` and `onLeave` callback can
   * be provided to react to changes in the client's local presences across
   * disconnects and reconnects with the server.
   *
   * @param {Record<string, PresenceState>} currentState
   * @param {Record<string, PresenceState>} newState
   * @param {PresenceOnJoin} onJoin
   * @param {PresenceOnLeave} onLeave
   *
   * @returns {Record<string, PresenceState>}
   */
  static syncState(currentState, newState, onJoin, onLeave) {
    let state = this.toNullProtoObj(this.clone(currentState));
    newState = this.toNullProtoObj(newState);
    let joins = /* @__PURE__ */ Object.create(null);
    let leaves = /* @__PURE__ */ Object.create(null);
    this.map(state, (key, presence) => {
      if (!newState[key]) {
        leaves[key] = presence;
      }
    });
    this.map(newState, (key, newPresence) => {
      let currentPresence = state[key];
      if (currentPresence) {
        let newRefs = newPresence.metas.map((m) => m.phx_ref);
        let curRefs = currentPresence.metas.map((m) => m.phx_ref);
        let joinedMetas = newPresence.metas.filter((m) => curRefs.indexOf(m.phx_ref) < 0);
        let leftMetas = currentPresence.metas.filter((m) => newRefs.indexOf(m.phx_ref) < 0);
        if (joinedMetas.length > 0) {
          joins[key] = newPresence;
          joins[key].metas = joinedMetas;
        }
        if (leftMetas.length > 0) {
          leaves[key] = this.clone(currentPresence);
          leaves[key].metas = leftMetas;
        }
      } else {
        joins[key] = newPresence;
      }
    });
    return this.syncDiff(state, { joins, leaves }, onJoin, onLeave);
  }
  /**
   *
   * Used to sync a diff of presence join and leave
   * events from the server, as they happen. Like `syncState`, `syncDiff`
   * accepts optional `onJoin` and `onLeave` callbacks to react to a user
   * joining or leaving from a device.
   *
   * @param {Record<string, PresenceState>} state
   * @param {PresenceDiff} diff
   * @param {PresenceOnJoin} onJoin
   * @param {PresenceOnLeave} onLeave
   *
   * @returns {Record<string, PresenceState>}
   */
  static syncDiff(state, diff, onJoin, onLeave) {
    state = this.toNullProtoObj(state);
    let { joins, leaves } = this.clone(diff);
    if (!onJoin) {
      onJoin = function() {
      };
    }
    if (!onLeave) {
      onLeave = function() {
      };
    }
    this.map(joins, (key, newPresence) => {
      let currentPresence = state[key];
      state[key] = this.clone(newPresence);
      if (currentPresence) {
        let joinedRefs = state[key].metas.map((m) => m.phx_ref);
        let curMetas = currentPresence.metas.filter((m) => joinedRefs.indexOf(m.phx_ref) < 0);
        state[key].metas.unshift(...curMetas);
      }
      onJoin(key, currentPresence, newPresence);
    });
    this.map(leaves, (key, leftPresence) => {
      let currentPresence = state[key];
      if (!currentPresence) {
        return;
      }
      let refsToRemove = leftPresence.metas.map((m) => m.phx_ref);
      currentPresence.metas = currentPresence.metas.filter((p) => {
        return refsToRemove.indexOf(p.phx_ref) < 0;
      });
      onLeave(key, currentPresence, leftPresence);
      if (currentPresence.metas.length === 0) {
        delete state[key];
      }
    });
    return state;
  }
  /**
   * Returns the array of presences, with selected metadata.
   *
   * @template [T=PresenceState]
   * @param {Record<string, PresenceState>} presences
   * @param {((key: string, obj: PresenceState) => T)} [chooser]
   *
   * @returns {T[]}
   */
  static list(presences, chooser) {
    if (!chooser) {
      chooser = function(key, pres) {
        return pres;
      };
    }
    return this.map(presences, (key, presence) => {
      return chooser(key, presence);
    });
  }
  // private
  /**
  * @template T
  * @param {Record<string, PresenceState>} obj
  * @param {(key: string, obj: PresenceState) => T} func
  */
  static map(obj, func) {
    return Object.getOwnPropertyNames(obj).map((key) => func(key, obj[key]));
  }
  // Presence keys are chosen on the server and may collide with
  // Object.prototype properties ("__proto__", "constructor", ...), so any
  // object indexed by presence key must not have a prototype chain
  //
  // TODO: replace the null-prototype objects with Maps in Phoenix 2.0
  // (breaking change for the lower-level static API)
  static toNullProtoObj(obj) {
    if (Object.getPrototypeOf(obj) === null) {
      return obj;
    }
    let cleaned = /* @__PURE__ */ Object.create(null);
    Object.getOwnPropertyNames(obj).forEach((key) => {
      cleaned[key] = obj[key];
    });
    return cleaned;
  }
  /**
  * @template T
  * @param {T} obj
  * @returns {T}
  */
  static clone(obj) {
    return JSON.parse(JSON.stringify(obj));
  }
};
var serializer_default2 = {
  HEADER_LENGTH: 1,
  META_LENGTH: 4,
  KINDS: { push: 0, reply: 1, broadcast: 2 },
  /**
  * @template T
  * @param {Message<Record<string, any>>} msg
  * @param {(msg: ArrayBuffer | string) => T} callback
  * @returns {T}
  */
  encode(msg, callback) {
    if (msg.payload.constructor === ArrayBuffer) {
      return callback(this.binaryEncode(msg));
    } else {
      let payload = [msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload];
      return callback(JSON.stringify(payload));
    }
  },
  /**
  * @template T
  * @param {ArrayBuffer | string} rawPayload
  * @param {(msg: Message<unknown>) => T} callback
  * @returns {T}
  */
  decode(rawPayload, callback) {
    if (rawPayload.constructor === ArrayBuffer) {
      return callback(this.binaryDecode(rawPayload));
    } else {
      let [join_ref, ref, topic, event, payload] = JSON.parse(rawPayload);
      return callback({ join_ref, ref, topic, event, payload });
    }
  },
  /** @private */
  binaryEncode(message) {
    let { join_ref, ref, event, topic, payload } = message;
    let encoder = new TextEncoder();
    let joinRefBytes = encoder.encode(join_ref);
    let refBytes = encoder.encode(ref);
    let topicBytes = encoder.encode(topic);
    let eventBytes = encoder.encode(event);
    this.assertFieldSize(joinRefBytes.byteLength, "join_ref");
    this.assertFieldSize(refBytes.byteLength, "ref");
    this.assertFieldSize(topicBytes.byteLength, "topic");
    this.assertFieldSize(eventBytes.byteLength, "event");
    let metaLength = this.META_LENGTH + joinRefBytes.byteLength + refBytes.byteLength + topicBytes.byteLength + eventBytes.byteLength;
    let header = new ArrayBuffer(this.HEADER_LENGTH + metaLength);
    let headerBytes = new Uint8Array(header);
    let view = new DataView(header);
    let offset = 0;
    view.setUint8(offset++, this.KINDS.push);
    view.setUint8(offset++, joinRefBytes.byteLength);
    view.setUint8(offset++, refBytes.byteLength);
    view.setUint8(offset++, topicBytes.byteLength);
    view.setUint8(offset++, eventBytes.byteLength);
    headerBytes.set(joinRefBytes, offset);
    offset += joinRefBytes.byteLength;
    headerBytes.set(refBytes, offset);
    offset += refBytes.byteLength;
    headerBytes.set(topicBytes, offset);
    offset += topicBytes.byteLength;
    headerBytes.set(eventBytes, offset);
    offset += eventBytes.byteLength;
    var combined = new Uint8Array(header.byteLength + payload.byteLength);
    combined.set(headerBytes, 0);
    combined.set(new Uint8Array(payload), header.byteLength);
    return combined.buffer;
  },
  assertFieldSize(size, name) {
    if (size > 255) {
      throw new Error(`unable to convert ${name} to binary: must be less than or equal to 255 bytes, but is ${size} bytes`);
    }
  },
  /**
  * @private
  */
  binaryDecode(buffer) {
    let view = new DataView(buffer);
    let kind = view.getUint8(0);
    let decoder = new TextDecoder();
    switch (kind) {
      case this.KINDS.push:
        return this.decodePush(buffer, view, decoder);
      case this.KINDS.reply:
        return this.decodeReply(buffer, view, decoder);
      case this.KINDS.broadcast:
        return this.decodeBroadcast(buffer, view, decoder);
    }
  },
  /** @private */
  decodePush(buffer, view, decoder) {
    let joinRefSize = view.getUint8(1);
    let topicSize = view.getUint8(2);
    let eventSize = view.getUint8(3);
    let offset = this.HEADER_LENGTH + this.META_LENGTH - 1;
    let joinRef = decoder.decode(buffer.slice(offset, offset + joinRefSize));
    offset = offset + joinRefSize;
    let topic = decoder.decode(buffer.slice(offset, offset + topicSize));
    offset = offset + topicSize;
    let event = decoder.decode(buffer.slice(offset, offset + eventSize));
    offset = offset + eventSize;
    let data = buffer.slice(offset, buffer.byteLength);
    return { join_ref: joinRef, ref: null, topic, event, payload: data };
  },
  /** @private */
  decodeReply(buffer, view, decoder) {
    let joinRefSize = view.getUint8(1);
    let refSize = view.getUint8(2);
    let topicSize = view.getUint8(3);
    let eventSize = view.getUint8(4);
    let offset = this.HEADER_LENGTH + this.META_LENGTH;
    let joinRef = decoder.decode(buffer.slice(offset, offset + joinRefSize));
    offset = offset + joinRefSize;
    let ref = decoder.decode(buffer.slice(offset, offset + refSize));
    offset = offset + refSize;
    let topic = decoder.decode(buffer.slice(offset, offset + topicSize));
    offset = offset + topicSize;
    let event = decoder.decode(buffer.slice(offset, offset + eventSize));
    offset = offset + eventSize;
    let data = buffer.slice(offset, buffer.byteLength);
    let payload = { status: event, response: data };
    return { join_ref: joinRef, ref, topic, event: CHANNEL_EVENTS2.reply, payload };
  },
  /** @private */
  decodeBroadcast(buffer, view, decoder) {
    let topicSize = view.getUint8(1);
    let eventSize = view.getUint8(2);
    let offset = this.HEADER_LENGTH + 2;
    let topic = decoder.decode(buffer.slice(offset, offset + topicSize));
    offset = offset + topicSize;
    let event = decoder.decode(buffer.slice(offset, offset + eventSize));
    offset = offset + eventSize;
    let data = buffer.slice(offset, buffer.byteLength);
    return { join_ref: null, ref: null, topic, event, payload: data };
  }
};
var Socket = class {
  /** Initializes the Socket *
   *
   * For IE8 support use an ES5-shim (https://github.com/es-shims/es5-shim)
   *
   * @constructor
   * @param {string} endPoint - The string WebSocket endpoint, ie, `"ws://example.com/socket"`,
   *                                               `"wss://example.com"`
   *                                               `"/socket"` (inherited host & protocol)
   * @param {SocketOptions} [opts] - Optional configuration
   */
  constructor(endPoint, opts = {}) {
    this.stateChangeCallbacks = { open: [], close: [], error: [], message: [] };
    this.channels = [];
    this.sendBuffer = [];
    this.ref = 0;
    this.fallbackRef = null;
    this.timeout = opts.timeout || DEFAULT_TIMEOUT2;
    this.transport = opts.transport || global2.WebSocket || LongPoll;
    this.conn = void 0;
    this.primaryPassedHealthCheck = false;
    this.longPollFallbackMs = opts.longPollFallbackMs;
    this.fallbackTimer = null;
    let envSessionStorage = null;
    try {
      envSessionStorage = global2 && global2.sessionStorage;
    } catch {
    }
    this.sessionStore = opts.sessionStorage || envSessionStorage;
    this.establishedConnections = 0;
    this.defaultEncoder = serializer_default2.encode.bind(serializer_default2);
    this.defaultDecoder = serializer_default2.decode.bind(serializer_default2);
    this.closeWasClean = true;
    this.disconnecting = false;
    this.binaryType = opts.binaryType || "arraybuffer";
    this.connectClock = 1;
    this.pageHidden = false;
    this.encode = void 0;
    this.decode = void 0;
    if (this.transport !== LongPoll) {
      this.encode = opts.encode || this.defaultEncoder;
      this.decode = opts.decode || this.defaultDecoder;
    } else {
      this.encode = this.defaultEncoder;
      this.decode = this.defaultDecoder;
    }
    let awaitingConnectionOnPageShow = null;
    if (phxWindow && phxWindow.addEventListener) {
      phxWindow.addEventListener("pagehide", (_e) => {
        if (this.conn) {
          this.disconnect();
          awaitingConnectionOnPageShow = this.connectClock;
        }
      });
      phxWindow.addEventListener("pageshow", (_e) => {
        if (awaitingConnectionOnPageShow === this.connectClock) {
          awaitingConnectionOnPageShow = null;
          this.connect();
        }
      });
      phxWindow.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "hidden") {
          this.pageHidden = true;
        } else {
          this.pageHidden = false;
          if (!this.isConnected() && !this.closeWasClean) {
            this.teardown(() => this.connect());
          }
        }
      });
    }
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs || 3e4;
    this.autoSendHeartbeat = opts.autoSendHeartbeat ?? true;
    this.heartbeatCallback = opts.heartbeatCallback ?? (() => {
    });
    this.rejoinAfterMs = (tries) => {
      if (opts.rejoinAfterMs) {
        return opts.rejoinAfterMs(tries);
      } else {
        return [1e3, 2e3, 5e3][tries - 1] || 1e4;
      }
    };
    this.reconnectAfterMs = (tries) => {
      if (opts.reconnectAfterMs) {
        return opts.reconnectAfterMs(tries);
      } else {
        return [10, 50, 100, 150, 200, 250, 500, 1e3, 2e3][tries - 1] || 5e3;
      }
    };
    this.logger = opts.logger || null;
    if (!this.logger && opts.debug) {
      this.logger = (kind, msg, data) => {
        console.log(`${kind}: ${msg}`, data);
      };
    }
    this.longpollerTimeout = opts.longpollerTimeout || 2e4;
    this.params = closure(opts.params || {});
    this.endPoint = `${endPoint}/${TRANSPORTS.websocket}`;
    this.vsn = opts.vsn || DEFAULT_VSN2;
    this.heartbeatTimeoutTimer = null;
    this.heartbeatTimer = null;
    this.heartbeatSentAt = null;
    this.pendingHeartbeatRef = null;
    this.reconnectTimer = new Timer(() => {
      if (this.pageHidden) {
        this.log("Not reconnecting as page is hidden!");
        this.teardown();
        return;
      }
      this.teardown(async () => {
        if (opts.beforeReconnect) await opts.beforeReconnect();
        this.connect();
      });
    }, this.reconnectAfterMs);
    this.authToken = opts.authToken && closure(opts.authToken);
  }
  /**
   * Returns the LongPoll transport reference
   */
  getLongPollTransport() {
    return LongPoll;
  }
  /**
   * Disconnects and replaces the active transport
   *
   * @param {SocketTransport} newTransport - The new transport class to instantiate
   *
   */
  replaceTransport(newTransport) {
    this.connectClock++;
    this.closeWasClean = true;
    clearTimeout(this.fallbackTimer);
    this.reconnectTimer.reset();
    if (this.conn) {
      this.conn.close();
      this.conn = null;
    }
    this.transport = newTransport;
  }
  /**
   * Returns the socket protocol
   *
   * @returns {"wss" | "ws"}
   */
  protocol() {
    return location.protocol.match(/^https/) ? "wss" : "ws";
  }
  /**
   * The fully qualified socket url
   *
   * @returns {string}
   */
  endPointURL() {
    let uri = Ajax.appendParams(
      Ajax.appendParams(this.endPoint, this.params()),
      { vsn: this.vsn }
    );
    if (uri.charAt(0) !== "/") {
      return uri;
    }
    if (uri.charAt(1) === "/") {
      return `${this.protocol()}:${uri}`;
    }
    return `${this.protocol()}://${location.host}${uri}`;
  }
  /**
   * Disconnects the socket
   *
   * See https://developer.mozilla.org/en-US/docs/Web/API/CloseEvent#Status_codes for valid status codes.
   *
   * @param {() => void} [callback] - Optional callback which is called after socket is disconnected.
   * @param {number} [code] - A status code for disconnection (Optional).
   * @param {string} [reason] - A textual description of the reason to disconnect. (Optional)
   */
  disconnect(callback, code, reason) {
    this.connectClock++;
    this.disconnecting = true;
    this.closeWasClean = true;
    clearTimeout(this.fallbackTimer);
    this.reconnectTimer.reset();
    this.teardown(() => {
      this.disconnecting = false;
      callback && callback();
    }, code, reason);
  }
  /**
   * @param {Params} [params] - [DEPRECATED] The params to send when connecting, for example `{user_id: userToken}`
   *
   * Passing params to connect is deprecated; pass them in the Socket constructor instead:
   * `new Socket("/socket", {params: {user_id: userToken}})`.
   */
  connect(params) {
    if (params) {
      console && console.log("passing params to connect is deprecated. Instead pass :params to the Socket constructor");
      this.params = closure(params);
    }
    if (this.conn && !this.disconnecting) {
      return;
    }
    if (this.longPollFallbackMs && this.transport !== LongPoll) {
      this.connectWithFallback(LongPoll, this.longPollFallbackMs);
    } else {
      this.transportConnect();
    }
  }
  /**
   * Logs the message. Override `this.logger` for specialized logging. noops by default
   * @param {string} kind
   * @param {string} msg
   * @param {Object} data
   */
  log(kind, msg, data) {
    this.logger && this.logger(kind, msg, data);
  }
  /**
   * Returns true if a logger has been set on this socket.
   */
  hasLogger() {
    return this.logger !== null;
  }
  /**
   * Registers callbacks for connection open events
   *
   * @example socket.onOpen(function(){ console.info("the socket was opened") })
   *
   * @param {SocketOnOpen} callback
   */
  onOpen(callback) {
    let ref = this.makeRef();
    this.stateChangeCallbacks.open.push([ref, callback]);
    return ref;
  }
  /**
   * Registers callbacks for connection close events
   * @param {SocketOnClose} callback
   * @returns {string}
   */
  onClose(callback) {
    let ref = this.makeRef();
    this.stateChangeCallbacks.close.push([ref, callback]);
    return ref;
  }
  /**
   * Registers callbacks for connection error events
   *
   * @example socket.onError(function(error){ alert("An error occurred") })
   *
   * @param {SocketOnError} callback
   * @returns {string}
   */
  onError(callback) {
    let ref = this.makeRef();
    this.stateChangeCallbacks.error.push([ref, callback]);
    return ref;
  }
  /**
   * Registers callbacks for connection message events
   * @param {SocketOnMessage} callback
   * @returns {string}
   */
  onMessage(callback) {
    let ref = this.makeRef();
    this.stateChangeCallbacks.message.push([ref, callback]);
    return ref;
  }
  /**
   * Sets a callback that receives lifecycle events for internal heartbeat messages.
   * Useful for instrumenting connection health (e.g. sent/ok/timeout/disconnected).
   * @param {HeartbeatCallback} callback
   */
  onHeartbeat(callback) {
    this.heartbeatCallback = callback;
  }
  /**
   * Pings the server and invokes the callback with the RTT in milliseconds
   * @param {(timeDelta: number) => void} callback
   *
   * Returns true if the ping was pushed or false if unable to be pushed.
   */
  ping(callback) {
    if (!this.isConnected()) {
      return false;
    }
    let ref = this.makeRef();
    let startTime = Date.now();
    this.push({ topic: "phoenix", event: "heartbeat", payload: {}, ref });
    let onMsgRef = this.onMessage((msg) => {
      if (msg.ref === ref) {
        this.off([onMsgRef]);
        callback(Date.now() - startTime);
      }
    });
    return true;
  }
  /**
   * @private
   *
   * @param {Function}
   */
  transportName(transport) {
    switch (transport) {
      case LongPoll:
        return "LongPoll";
      default:
        return transport.name;
    }
  }
  /**
   * @private
   */
  transportConnect() {
    this.connectClock++;
    this.closeWasClean = false;
    let protocols = void 0;
    if (this.authToken) {
      protocols = ["phoenix", `${AUTH_TOKEN_PREFIX}${btoa(this.authToken()).replace(/=/g, "")}`];
    }
    this.conn = new this.transport(this.endPointURL(), protocols);
    this.conn.binaryType = this.binaryType;
    this.conn.timeout = this.longpollerTimeout;
    this.conn.onopen = () => this.onConnOpen();
    this.conn.onerror = (error) => this.onConnError(error);
    this.conn.onmessage = (event) => this.onConnMessage(event);
    this.conn.onclose = (event) => this.onConnClose(event);
  }
  getSession(key) {
    return this.sessionStore && this.sessionStore.getItem(key);
  }
  storeSession(key, val) {
    this.sessionStore && this.sessionStore.setItem(key, val);
  }
  connectWithFallback(fallbackTransport, fallbackThreshold = 2500) {
    clearTimeout(this.fallbackTimer);
    let established = false;
    let primaryTransport = true;
    let openRef, errorRef;
    let fallbackTransportName = this.transportName(fallbackTransport);
    let fallback = (reason) => {
      this.log("transport", `falling back to ${fallbackTransportName}...`, reason);
      this.off([openRef, errorRef]);
      primaryTransport = false;
      this.replaceTransport(fallbackTransport);
      this.transportConnect();
    };
    if (this.getSession(`phx:fallback:${fallbackTransportName}`)) {
      return fallback("memorized");
    }
    this.fallbackTimer = setTimeout(fallback, fallbackThreshold);
    errorRef = this.onError((reason) => {
      this.log("transport", "error", reason);
      if (primaryTransport && !established) {
        clearTimeout(this.fallbackTimer);
        fallback(reason);
      }
    });
    if (this.fallbackRef) {
      this.off([this.fallbackRef]);
    }
    this.fallbackRef = this.onOpen(() => {
      established = true;
      if (!primaryTransport) {
        let fallbackTransportName2 = this.transportName(fallbackTransport);
        if (!this.primaryPassedHealthCheck) {
          this.storeSession(`phx:fallback:${fallbackTransportName2}`, "true");
        }
        return this.log("transport", `established ${fallbackTransportName2} fallback`);
      }
      clearTimeout(this.fallbackTimer);
      this.fallbackTimer = setTimeout(fallback, fallbackThreshold);
      this.ping((rtt) => {
        this.log("transport", "connected to primary after", rtt);
        this.primaryPassedHealthCheck = true;
        clearTimeout(this.fallbackTimer);
      });
    });
    this.transportConnect();
  }
  clearHeartbeats() {
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.heartbeatTimeoutTimer);
  }
  onConnOpen() {
    if (this.hasLogger()) this.log("transport", `connected to ${this.endPointURL()}`);
    this.closeWasClean = false;
    this.disconnecting = false;
    this.establishedConnections++;
    this.flushSendBuffer();
    this.reconnectTimer.reset();
    if (this.autoSendHeartbeat) {
      this.resetHeartbeat();
    }
    this.triggerStateCallbacks("open");
  }
  /**
   * @private
   */
  heartbeatTimeout() {
    if (this.pendingHeartbeatRef) {
      this.pendingHeartbeatRef = null;
      this.heartbeatSentAt = null;
      if (this.hasLogger()) {
        this.log("transport", "heartbeat timeout. Attempting to re-establish connection");
      }
      try {
        this.heartbeatCallback("timeout");
      } catch (e) {
        this.log("error", "error in heartbeat callback", e);
      }
      this.triggerChanError(new Error("heartbeat timeout"));
      this.closeWasClean = false;
      this.teardown(() => this.reconnectTimer.scheduleTimeout(), WS_CLOSE_NORMAL, "heartbeat timeout");
    }
  }
  resetHeartbeat() {
    if (this.conn && this.conn.skipHeartbeat) {
      return;
    }
    this.pendingHeartbeatRef = null;
    this.clearHeartbeats();
    this.heartbeatTimer = setTimeout(() => this.sendHeartbeat(), this.heartbeatIntervalMs);
  }
  teardown(callback, code, reason) {
    if (!this.conn) {
      return callback && callback();
    }
    const connToClose = this.conn;
    this.waitForBufferDone(connToClose, () => {
      if (code) {
        connToClose.close(code, reason || "");
      } else {
        connToClose.close();
      }
      this.waitForSocketClosed(connToClose, () => {
        if (this.conn === connToClose) {
          this.conn.onopen = function() {
          };
          this.conn.onerror = function() {
          };
          this.conn.onmessage = function() {
          };
          this.conn.onclose = function() {
          };
          this.conn = null;
        }
        callback && callback();
      });
    });
  }
  waitForBufferDone(conn, callback, tries = 1) {
    if (tries === 5 || !conn.bufferedAmount) {
      callback();
      return;
    }
    setTimeout(() => {
      this.waitForBufferDone(conn, callback, tries + 1);
    }, 150 * tries);
  }
  waitForSocketClosed(conn, callback, tries = 1) {
    if (tries === 5 || conn.readyState === SOCKET_STATES.closed) {
      callback();
      return;
    }
    setTimeout(() => {
      this.waitForSocketClosed(conn, callback, tries + 1);
    }, 150 * tries);
  }
  /**
  * @param {CloseEvent} event
  */
  onConnClose(event) {
    if (this.conn) this.conn.onclose = () => {
    };
    if (this.hasLogger()) this.log("transport", "close", event);
    this.triggerChanError(event);
    this.clearHeartbeats();
    if (!this.closeWasClean) {
      this.reconnectTimer.scheduleTimeout();
    }
    this.triggerStateCallbacks("close", event);
  }
  /**
   * @private
   * @param {Event} error
   */
  onConnError(error) {
    if (this.hasLogger()) this.log("transport", "error", error);
    let transportBefore = this.transport;
    let establishedBefore = this.establishedConnections;
    this.triggerStateCallbacks("error", error, transportBefore, establishedBefore);
    if (transportBefore === this.transport || establishedBefore > 0) {
      this.triggerChanError(error);
    }
  }
  /**
   * @private
   * @param {unknown} [reason] underlying close/error event forwarded to channel error listeners
   */
  triggerChanError(reason) {
    this.channels.forEach((channel) => {
      if (!(channel.isErrored() || channel.isLeaving() || channel.isClosed())) {
        channel.trigger(CHANNEL_EVENTS2.error, reason);
      }
    });
  }
  /**
   * @returns {string}
   */
  connectionState() {
    switch (this.conn && this.conn.readyState) {
      case SOCKET_STATES.connecting:
        return "connecting";
      case SOCKET_STATES.open:
        return "open";
      case SOCKET_STATES.closing:
        return "closing";
      default:
        return "closed";
    }
  }
  /**
   * @returns {boolean}
   */
  isConnected() {
    return this.connectionState() === "open";
  }
  /**
   *
   * @param {Channel} channel
   */
  remove(channel) {
    this.off(channel.stateChangeRefs);
    this.channels = this.channels.filter((c) => c !== channel);
  }
  /**
   * Removes `onOpen`, `onClose`, `onError,` and `onMessage` registrations.
   *
   * @param {string[]} refs - list of refs returned by calls to
   *                 `onOpen`, `onClose`, `onError,` and `onMessage`
   */
  off(refs) {
    for (let key in this.stateChangeCallbacks) {
      this.stateChangeCallbacks[key] = this.stateChangeCallbacks[key].filter(([ref]) => {
        return refs.indexOf(ref) === -1;
      });
    }
  }
  /**
   * Initiates a new channel for the given topic
   *
   * @param {string} topic
   * @param {Params | (() => Params)} [chanParams]- Parameters for the channel
   * @returns {Channel}
   */
  channel(topic, chanParams = {}) {
    let chan = new Channel(topic, chanParams, this);
    this.channels.push(chan);
    return chan;
  }
  /**
   * @param {Message<Record<string, any>>} data
   */
  push(data) {
    if (this.hasLogger()) {
      let { topic, event, payload, ref, join_ref } = data;
      this.log("push", `${topic} ${event} (${join_ref}, ${ref})`, payload);
    }
    if (this.isConnected()) {
      this.encode(data, (result) => this.conn.send(result));
    } else {
      this.sendBuffer.push(() => this.encode(data, (result) => this.conn.send(result)));
    }
  }
  /**
   * Return the next message ref, accounting for overflows
   * @returns {string}
   */
  makeRef() {
    let newRef = this.ref + 1;
    if (newRef === this.ref) {
      this.ref = 0;
    } else {
      this.ref = newRef;
    }
    return this.ref.toString();
  }
  sendHeartbeat() {
    if (!this.isConnected()) {
      try {
        this.heartbeatCallback("disconnected");
      } catch (e) {
        this.log("error", "error in heartbeat callback", e);
      }
      return;
    }
    if (this.pendingHeartbeatRef) {
      this.heartbeatTimeout();
      return;
    }
    this.pendingHeartbeatRef = this.makeRef();
    this.heartbeatSentAt = Date.now();
    this.push({ topic: "phoenix", event: "heartbeat", payload: {}, ref: this.pendingHeartbeatRef });
    try {
      this.heartbeatCallback("sent");
    } catch (e) {
      this.log("error", "error in heartbeat callback", e);
    }
    this.heartbeatTimeoutTimer = setTimeout(() => this.heartbeatTimeout(), this.heartbeatIntervalMs);
  }
  flushSendBuffer() {
    if (this.isConnected() && this.sendBuffer.length > 0) {
      this.sendBuffer.forEach((callback) => callback());
      this.sendBuffer = [];
    }
  }
  /**
  * @param {MessageEvent<any>} rawMessage
  */
  onConnMessage(rawMessage) {
    this.decode(rawMessage.data, (msg) => {
      let { topic, event, payload, ref, join_ref } = msg;
      if (ref && ref === this.pendingHeartbeatRef) {
        const latency = this.heartbeatSentAt ? Date.now() - this.heartbeatSentAt : void 0;
        this.clearHeartbeats();
        try {
          this.heartbeatCallback(payload.status === "ok" ? "ok" : "error", latency);
        } catch (e) {
          this.log("error", "error in heartbeat callback", e);
        }
        this.pendingHeartbeatRef = null;
        this.heartbeatSentAt = null;
        if (this.autoSendHeartbeat) {
          this.heartbeatTimer = setTimeout(() => this.sendHeartbeat(), this.heartbeatIntervalMs);
        }
      }
      if (this.hasLogger()) this.log("receive", `${payload.status || ""} ${topic} ${event} ${ref && "(" + ref + ")" || ""}`.trim(), payload);
      for (let i = 0; i < this.channels.length; i++) {
        const channel = this.channels[i];
        if (!channel.isMember(topic, event, payload, join_ref)) {
          continue;
        }
        channel.trigger(event, payload, ref, join_ref);
      }
      this.triggerStateCallbacks("message", msg);
    });
  }
  /**
   * @private
   * @template {keyof SocketStateChangeCallbacks} K
   * @param {K} event
   * @param {...Parameters<SocketStateChangeCallbacks[K][number][1]>} args
   * @returns {void}
   */
  triggerStateCallbacks(event, ...args) {
    try {
      this.stateChangeCallbacks[event].forEach(([_, callback]) => {
        try {
          callback(...args);
        } catch (e) {
          this.log("error", `error in ${event} callback`, e);
        }
      });
    } catch (e) {
      this.log("error", `error triggering ${event} callbacks`, e);
    }
  }
  leaveOpenTopic(topic) {
    let dupChannel = this.channels.find((c) => c.topic === topic && (c.isJoined() || c.isJoining()));
    if (dupChannel) {
      if (this.hasLogger()) this.log("transport", `leaving duplicate topic "${topic}"`);
      dupChannel.leave();
    }
  }
};

// node_modules/@supabase/realtime-js/dist/module/phoenix/presenceAdapter.js
var PresenceAdapter = class _PresenceAdapter {
  constructor(channel, opts) {
    const phoenixOptions = phoenixPresenceOptions(opts);
    this.presence = new Presence(channel.getChannel(), phoenixOptions);
    this.presence.onJoin((key, currentPresence, newPresence) => {
      const onJoinPayload = _PresenceAdapter.onJoinPayload(key, currentPresence, newPresence);
      channel.getChannel().trigger("presence", onJoinPayload);
    });
    this.presence.onLeave((key, currentPresence, leftPresence) => {
      const onLeavePayload = _PresenceAdapter.onLeavePayload(key, currentPresence, leftPresence);
      channel.getChannel().trigger("presence", onLeavePayload);
    });
    this.presence.onSync(() => {
      channel.getChannel().trigger("presence", { event: "sync" });
    });
  }
  get state() {
    return _PresenceAdapter.transformState(this.presence.state);
  }
  /**
   * @private
   * Remove 'metas' key
   * Change 'phx_ref' to 'presence_ref'
   * Remove 'phx_ref' and 'phx_ref_prev'
   *
   * @example Transform state
   * // returns {
   *  abc123: [
   *    { presence_ref: '2', user_id: 1 },
   *    { presence_ref: '3', user_id: 2 }
   *  ]
   * }
   * RealtimePresence.transformState({
   *  abc123: {
   *    metas: [
   *      { phx_ref: '2', phx_ref_prev: '1' user_id: 1 },
   *      { phx_ref: '3', user_id: 2 }
   *    ]
   *  }
   * })
   *
   */
  static transformState(state) {
    state = cloneState(state);
    return Object.getOwnPropertyNames(state).reduce((newState, key) => {
      const presences = state[key];
      newState[key] = transformState(presences);
      return newState;
    }, {});
  }
  static onJoinPayload(key, currentPresence, newPresence) {
    const currentPresences = parseCurrentPresences(currentPresence);
    const newPresences = transformState(newPresence);
    return {
      event: "join",
      key,
      currentPresences,
      newPresences
    };
  }
  static onLeavePayload(key, currentPresence, leftPresence) {
    const currentPresences = parseCurrentPresences(currentPresence);
    const leftPresences = transformState(leftPresence);
    return {
      event: "leave",
      key,
      currentPresences,
      leftPresences
    };
  }
};
function transformState(presences) {
  return presences.metas.map((presence) => {
    const descriptors = Object.getOwnPropertyDescriptors(presence);
    const transformedPresence = Object.defineProperties({}, descriptors);
    transformedPresence["presence_ref"] = transformedPresence["phx_ref"];
    delete transformedPresence["phx_ref"];
    delete transformedPresence["phx_ref_prev"];
    return transformedPresence;
  });
}
function cloneState(state) {
  return JSON.parse(JSON.stringify(state));
}
function phoenixPresenceOptions(opts) {
  return (opts === null || opts === void 0 ? void 0 : opts.events) && { events: opts.events };
}
function parseCurrentPresences(currentPresences) {
  return (currentPresences === null || currentPresences === void 0 ? void 0 : currentPresences.metas) ? transformState(currentPresences) : [];
}

// node_modules/@supabase/realtime-js/dist/module/RealtimePresence.js
var REALTIME_PRESENCE_LISTEN_EVENTS;
(function(REALTIME_PRESENCE_LISTEN_EVENTS2) {
  REALTIME_PRESENCE_LISTEN_EVENTS2["SYNC"] = "sync";
  REALTIME_PRESENCE_LISTEN_EVENTS2["JOIN"] = "join";
  REALTIME_PRESENCE_LISTEN_EVENTS2["LEAVE"] = "leave";
})(REALTIME_PRESENCE_LISTEN_EVENTS || (REALTIME_PRESENCE_LISTEN_EVENTS = {}));
var RealtimePresence = class {
  get state() {
    return this.presenceAdapter.state;
  }
  /**
   * Creates a Presence helper that keeps the local presence state in sync with the server.
   *
   * @param channel - The realtime channel to bind to.
   * @param opts - Optional custom event names, e.g. `{ events: { state: 'state', diff: 'diff' } }`.
   *
   * @category Realtime
   *
   * @example Example for a presence channel
   * ```ts
   * const presence = new RealtimePresence(channel)
   *
   * channel.on('presence', ({ event, key }) => {
   *   console.log(`Presence ${event} on ${key}`)
   * })
   * ```
   */
  constructor(channel, opts) {
    this.channel = channel;
    this.presenceAdapter = new PresenceAdapter(this.channel.channelAdapter, opts);
  }
};

// node_modules/@supabase/realtime-js/dist/module/lib/normalizeChannelError.js
function normalizeChannelError(reason) {
  if (reason instanceof Error) {
    return reason;
  }
  if (typeof reason === "string") {
    return new Error(reason);
  }
  if (reason && typeof reason === "object") {
    const obj = reason;
    if (typeof obj.code === "number") {
      const detail = typeof obj.reason === "string" && obj.reason ? ` (${obj.reason})` : "";
      return new Error(`socket closed: ${obj.code}${detail}`, { cause: reason });
    }
    return new Error("channel error: transport failure", { cause: reason });
  }
  return new Error("channel error: connection lost");
}

// node_modules/@supabase/realtime-js/dist/module/phoenix/channelAdapter.js
var ChannelAdapter = class {
  constructor(socket, topic, params) {
    const phoenixParams = phoenixChannelParams(params);
    this.channel = socket.getSocket().channel(topic, phoenixParams);
    this.socket = socket;
  }
  get state() {
    return this.channel.state;
  }
  set state(state) {
    this.channel.state = state;
  }
  get joinedOnce() {
    return this.channel.joinedOnce;
  }
  get joinPush() {
    return this.channel.joinPush;
  }
  get rejoinTimer() {
    return this.channel.rejoinTimer;
  }
  on(event, callback) {
    return this.channel.on(event, callback);
  }
  off(event, refNumber) {
    this.channel.off(event, refNumber);
  }
  subscribe(timeout) {
    return this.channel.join(timeout);
  }
  unsubscribe(timeout) {
    return this.channel.leave(timeout);
  }
  teardown() {
    this.channel.teardown();
  }
  onClose(callback) {
    this.channel.onClose(callback);
  }
  onError(callback) {
    return this.channel.onError(callback);
  }
  push(event, payload, timeout) {
    let push;
    try {
      push = this.channel.push(event, payload, timeout);
    } catch (error) {
      throw new Error(`tried to push '${event}' to '${this.channel.topic}' before joining. Use channel.subscribe() before pushing events`);
    }
    if (this.channel.pushBuffer.length > MAX_PUSH_BUFFER_SIZE) {
      const removedPush = this.channel.pushBuffer.shift();
      removedPush.cancelTimeout();
      this.socket.log("channel", `discarded push due to buffer overflow: ${removedPush.event}`, removedPush.payload());
    }
    return push;
  }
  updateJoinPayload(payload) {
    const oldPayload = this.channel.joinPush.payload();
    this.channel.joinPush.payload = () => Object.assign(Object.assign({}, oldPayload), payload);
  }
  canPush() {
    return this.socket.isConnected() && this.state === CHANNEL_STATES.joined;
  }
  isJoined() {
    return this.state === CHANNEL_STATES.joined;
  }
  isJoining() {
    return this.state === CHANNEL_STATES.joining;
  }
  isClosed() {
    return this.state === CHANNEL_STATES.closed;
  }
  isLeaving() {
    return this.state === CHANNEL_STATES.leaving;
  }
  updateFilterBindings(filterBindings) {
    this.channel.filterBindings = filterBindings;
  }
  updatePayloadTransform(callback) {
    this.channel.onMessage = callback;
  }
  /**
   * @internal
   */
  getChannel() {
    return this.channel;
  }
};
function phoenixChannelParams(options) {
  return {
    config: Object.assign({
      broadcast: { ack: false, self: false },
      presence: { key: "", enabled: false },
      private: false
    }, options.config)
  };
}

// node_modules/@supabase/realtime-js/dist/module/RealtimePostgresFilterBuilder.js
var PostgrestReservedCharsRegexp = /[,()"\\]/;
var needsQuoting = (value) => PostgrestReservedCharsRegexp.test(value) || value !== value.trim();
var quote = (value) => `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
var serializeScalar = (value) => {
  const serialized = value === null ? "null" : String(value);
  return needsQuoting(serialized) ? quote(serialized) : serialized;
};
var serializeIsValue = (value) => value === null ? "null" : String(value);
var serialize = (operator, value) => {
  if (operator === "in") {
    const values = Array.isArray(value) ? value : [value];
    if (values.length === 0) {
      throw new Error("Realtime `in` filter requires at least one value.");
    }
    const items = Array.from(new Set(values)).map((v) => serializeScalar(v)).join(",");
    return `in.(${items})`;
  }
  if (operator === "is") {
    return `is.${serializeIsValue(value)}`;
  }
  return `${operator}.${serializeScalar(value)}`;
};
var RealtimePostgresFilterBuilder = class {
  constructor() {
    this.filters = [];
  }
  add(column, operator, value, negate = false) {
    const prefix = negate ? "not." : "";
    this.filters.push(`${column}=${prefix}${serialize(operator, value)}`);
    return this;
  }
  /** Match rows where `column` equals `value` (`column=eq.value`). */
  eq(column, value) {
    return this.add(column, "eq", value);
  }
  /** Match rows where `column` does not equal `value` (`column=neq.value`). */
  neq(column, value) {
    return this.add(column, "neq", value);
  }
  /** Match rows where `column` is greater than `value` (`column=gt.value`). */
  gt(column, value) {
    return this.add(column, "gt", value);
  }
  /** Match rows where `column` is greater than or equal to `value` (`column=gte.value`). */
  gte(column, value) {
    return this.add(column, "gte", value);
  }
  /** Match rows where `column` is less than `value` (`column=lt.value`). */
  lt(column, value) {
    return this.add(column, "lt", value);
  }
  /** Match rows where `column` is less than or equal to `value` (`column=lte.value`). */
  lte(column, value) {
    return this.add(column, "lte", value);
  }
  /**
   * Match rows where `column` is one of `values` (`column=in.(a,b,c)`).
   * Requires at least one value; duplicates are removed. An element containing a
   * reserved character is double-quoted (`in.("a,b",c)`), so commas inside an
   * element are preserved. `null` is intentionally not accepted (`IN (null)`
   * never matches in SQL) — use `is`/`not('col','is',null)` for null checks.
   */
  in(column, values) {
    return this.add(column, "in", values);
  }
  /** Match rows where `column` matches the case-sensitive `pattern` (`column=like.pattern`). */
  like(column, pattern) {
    return this.add(column, "like", pattern);
  }
  /** Match rows where `column` matches the case-insensitive `pattern` (`column=ilike.pattern`). */
  ilike(column, pattern) {
    return this.add(column, "ilike", pattern);
  }
  /** Match rows where `column` matches the POSIX regex `pattern` (`column=match.pattern`). */
  match(column, pattern) {
    return this.add(column, "match", pattern);
  }
  /** Match rows where `column` matches the case-insensitive POSIX regex `pattern` (`column=imatch.pattern`). */
  imatch(column, pattern) {
    return this.add(column, "imatch", pattern);
  }
  /**
   * Match rows where `column` `IS` the given value (`column=is.null`).
   * Accepts `null`, a boolean, or the keywords `'null' | 'true' | 'false' | 'unknown'`.
   */
  is(column, value) {
    return this.add(column, "is", value);
  }
  /** Match rows where `column` is distinct from `value` (`column=isdistinct.value`). NULL-safe inequality. */
  isDistinct(column, value) {
    return this.add(column, "isdistinct", value);
  }
  not(column, operator, value) {
    return this.add(column, operator, value, true);
  }
  /**
   * Serialize all conditions into the comma-separated (AND) filter string.
   *
   * Conditions are joined by commas, which the server applies as `AND`. A scalar
   * value (or single `in` element) that contains a reserved character — `,`,
   * `(`, `)`, `"`, `\` — or surrounding whitespace is double-quoted and escaped
   * the way PostgREST does, so commas inside a value are preserved rather than
   * read as a condition boundary.
   */
  build() {
    return this.filters.join(",");
  }
  /** Alias for {@link build}; lets the builder be used wherever a string is expected. */
  toString() {
    return this.build();
  }
};

// node_modules/@supabase/realtime-js/dist/module/RealtimeChannel.js
var REALTIME_POSTGRES_CHANGES_LISTEN_EVENT;
(function(REALTIME_POSTGRES_CHANGES_LISTEN_EVENT2) {
  REALTIME_POSTGRES_CHANGES_LISTEN_EVENT2["ALL"] = "*";
  REALTIME_POSTGRES_CHANGES_LISTEN_EVENT2["INSERT"] = "INSERT";
  REALTIME_POSTGRES_CHANGES_LISTEN_EVENT2["UPDATE"] = "UPDATE";
  REALTIME_POSTGRES_CHANGES_LISTEN_EVENT2["DELETE"] = "DELETE";
})(REALTIME_POSTGRES_CHANGES_LISTEN_EVENT || (REALTIME_POSTGRES_CHANGES_LISTEN_EVENT = {}));
var REALTIME_LISTEN_TYPES;
(function(REALTIME_LISTEN_TYPES2) {
  REALTIME_LISTEN_TYPES2["BROADCAST"] = "broadcast";
  REALTIME_LISTEN_TYPES2["PRESENCE"] = "presence";
  REALTIME_LISTEN_TYPES2["POSTGRES_CHANGES"] = "postgres_changes";
  REALTIME_LISTEN_TYPES2["SYSTEM"] = "system";
})(REALTIME_LISTEN_TYPES || (REALTIME_LISTEN_TYPES = {}));
var REALTIME_SUBSCRIBE_STATES;
(function(REALTIME_SUBSCRIBE_STATES2) {
  REALTIME_SUBSCRIBE_STATES2["SUBSCRIBED"] = "SUBSCRIBED";
  REALTIME_SUBSCRIBE_STATES2["TIMED_OUT"] = "TIMED_OUT";
  REALTIME_SUBSCRIBE_STATES2["CLOSED"] = "CLOSED";
  REALTIME_SUBSCRIBE_STATES2["CHANNEL_ERROR"] = "CHANNEL_ERROR";
})(REALTIME_SUBSCRIBE_STATES || (REALTIME_SUBSCRIBE_STATES = {}));
var RealtimeChannel = class _RealtimeChannel {
  get state() {
    return this.channelAdapter.state;
  }
  set state(state) {
    this.channelAdapter.state = state;
  }
  get joinedOnce() {
    return this.channelAdapter.joinedOnce;
  }
  get timeout() {
    return this.socket.timeout;
  }
  get joinPush() {
    return this.channelAdapter.joinPush;
  }
  get rejoinTimer() {
    return this.channelAdapter.rejoinTimer;
  }
  /**
   * Creates a channel that can broadcast messages, sync presence, and listen to Postgres changes.
   *
   * The topic determines which realtime stream you are subscribing to. Config options let you
   * enable acknowledgement for broadcasts, presence tracking, or private channels.
   *
   * @category Realtime
   *
   * @example Using supabase-js (recommended)
   * ```ts
   * import { createClient } from '@supabase/supabase-js'
   *
   * const supabase = createClient('https://xyzcompany.supabase.co', 'your-publishable-key')
   * const channel = supabase.channel('room1')
   * channel
   *   .on('broadcast', { event: 'cursor-pos' }, (payload) => console.log(payload))
   *   .subscribe()
   * ```
   *
   * @example Standalone import for bundle-sensitive environments
   * ```ts
   * import RealtimeClient from '@supabase/realtime-js'
   *
   * const client = new RealtimeClient('https://xyzcompany.supabase.co/realtime/v1', {
   *   params: { apikey: 'your-publishable-key' },
   * })
   * const channel = new RealtimeChannel('realtime:public:messages', { config: {} }, client)
   * ```
   */
  constructor(topic, params = { config: {} }, socket) {
    var _a, _b;
    this.topic = topic;
    this.params = params;
    this.socket = socket;
    this.bindings = {};
    this.subTopic = topic.replace(/^realtime:/i, "");
    this.params.config = Object.assign({
      broadcast: { ack: false, self: false },
      presence: { key: "", enabled: false },
      private: false
    }, params.config);
    this.channelAdapter = new ChannelAdapter(this.socket.socketAdapter, topic, this.params);
    this.presence = new RealtimePresence(this);
    this._onClose(() => {
      this.socket._remove(this);
    });
    this._updateFilterTransform();
    this.broadcastEndpointURL = httpEndpointURL(this.socket.socketAdapter.endPointURL());
    this.private = this.params.config.private || false;
    if (!this.private && ((_b = (_a = this.params.config) === null || _a === void 0 ? void 0 : _a.broadcast) === null || _b === void 0 ? void 0 : _b.replay)) {
      throw new Error(`tried to use replay on public channel '${this.topic}'. It must be a private channel.`);
    }
  }
  /**
   * Subscribe registers your client with the server.
   *
   * The optional `callback` receives a `status` and, on failure, an `err` argument.
   * Log the full `err` so its `cause`, `name`, and any structured fields aren't hidden
   * behind `err.message`.
   *
   * @category Realtime
   *
   * @example Handling errors
   * ```js
   * supabase.channel('room1').subscribe((status, err) => {
   *   if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
   *     // Log the full error: its `cause` often holds the underlying reason.
   *     console.error(status, err)
   *   }
   * })
   * ```
   */
  subscribe(callback, timeout = this.timeout) {
    var _a, _b, _c, _d;
    if (!this.socket.isConnected()) {
      this.socket.connect();
    }
    if (this.channelAdapter.isClosed()) {
      const { config: { broadcast, presence, private: isPrivate, postgres_changes_options } } = this.params;
      const postgres_changes = (_b = (_a = this.bindings.postgres_changes) === null || _a === void 0 ? void 0 : _a.map((r) => r.filter)) !== null && _b !== void 0 ? _b : [];
      const presence_enabled = !!this.bindings[REALTIME_LISTEN_TYPES.PRESENCE] && this.bindings[REALTIME_LISTEN_TYPES.PRESENCE].length > 0 || ((_c = this.params.config.presence) === null || _c === void 0 ? void 0 : _c.enabled) === true;
      const accessTokenPayload = {};
      const config = Object.assign({ broadcast, presence: Object.assign(Object.assign({}, presence), { enabled: presence_enabled }), postgres_changes, private: isPrivate }, postgres_changes_options ? { postgres_changes_options } : {});
      if (this.socket.accessTokenValue) {
        accessTokenPayload.access_token = this.socket.accessTokenValue;
      }
      this._onError((reason) => {
        callback === null || callback === void 0 ? void 0 : callback(REALTIME_SUBSCRIBE_STATES.CHANNEL_ERROR, normalizeChannelError(reason));
      });
      this._onClose(() => callback === null || callback === void 0 ? void 0 : callback(REALTIME_SUBSCRIBE_STATES.CLOSED));
      this.updateJoinPayload(Object.assign({ config }, accessTokenPayload));
      this._updateFilterMessage();
      const joinTimeout = (postgres_changes_options === null || postgres_changes_options === void 0 ? void 0 : postgres_changes_options.wait) && postgres_changes.length > 0 ? Math.max(timeout, ((_d = postgres_changes_options.timeout) !== null && _d !== void 0 ? _d : DEFAULT_POSTGRES_CHANGES_WAIT_TIMEOUT) + POSTGRES_CHANGES_WAIT_ERROR_GRACE) : timeout;
      this.channelAdapter.subscribe(joinTimeout).receive("ok", async ({ postgres_changes: postgres_changes2 }) => {
        if (!this.socket._isManualToken()) {
          this.socket.setAuth();
        }
        if (postgres_changes2 === void 0) {
          callback === null || callback === void 0 ? void 0 : callback(REALTIME_SUBSCRIBE_STATES.SUBSCRIBED);
          return;
        }
        this._updatePostgresBindings(postgres_changes2, callback);
      }).receive("error", (error) => {
        this.state = CHANNEL_STATES.errored;
        const message = Object.values(error).join(", ") || "error";
        callback === null || callback === void 0 ? void 0 : callback(REALTIME_SUBSCRIBE_STATES.CHANNEL_ERROR, new Error(message, { cause: error }));
      }).receive("timeout", () => {
        callback === null || callback === void 0 ? void 0 : callback(REALTIME_SUBSCRIBE_STATES.TIMED_OUT);
      });
    }
    return this;
  }
  _updatePostgresBindings(postgres_changes, callback) {
    var _a;
    const clientPostgresBindings = this.bindings.postgres_changes;
    const bindingsLen = (_a = clientPostgresBindings === null || clientPostgresBindings === void 0 ? void 0 : clientPostgresBindings.length) !== null && _a !== void 0 ? _a : 0;
    const newPostgresBindings = [];
    for (let i = 0; i < bindingsLen; i++) {
      const clientPostgresBinding = clientPostgresBindings[i];
      const { filter: { event, schema, table, filter } } = clientPostgresBinding;
      const serverPostgresFilter = postgres_changes && postgres_changes[i];
      if (serverPostgresFilter && serverPostgresFilter.event === event && _RealtimeChannel.isFilterValueEqual(serverPostgresFilter.schema, schema) && _RealtimeChannel.isFilterValueEqual(serverPostgresFilter.table, table) && _RealtimeChannel.isFilterValueEqual(serverPostgresFilter.filter, filter)) {
        newPostgresBindings.push(Object.assign(Object.assign({}, clientPostgresBinding), { id: serverPostgresFilter.id }));
      } else {
        this.unsubscribe();
        this.state = CHANNEL_STATES.errored;
        callback === null || callback === void 0 ? void 0 : callback(REALTIME_SUBSCRIBE_STATES.CHANNEL_ERROR, new Error("mismatch between server and client bindings for postgres changes"));
        return;
      }
    }
    this.bindings.postgres_changes = newPostgresBindings;
    if (this.state != CHANNEL_STATES.errored && callback) {
      callback(REALTIME_SUBSCRIBE_STATES.SUBSCRIBED);
    }
  }
  /**
   * Returns the current presence state for this channel.
   *
   * The shape is a map keyed by presence key (for example a user id) where each entry contains the
   * tracked metadata for that user.
   *
   * @category Realtime
   */
  presenceState() {
    return this.presence.state;
  }
  /**
   * Sends the supplied payload to the presence tracker so other subscribers can see that this
   * client is online. Use `untrack` to stop broadcasting presence for the same key.
   *
   * Tracking makes this client visible to other subscribers immediately, regardless of this
   * channel's `config.presence.enabled` setting or whether it has a `presence` listener — that
   * flag only affects whether *this* client receives presence updates from others (and, on
   * RLS-protected channels, whether it's authorized to do so).
   *
   * @category Realtime
   */
  async track(payload, opts = {}) {
    return await this.send({
      type: "presence",
      event: "track",
      payload
    }, opts);
  }
  /**
   * Removes the current presence state for this client.
   *
   * @category Realtime
   */
  async untrack(opts = {}) {
    return await this.send({
      type: "presence",
      event: "untrack"
    }, opts);
  }
  /**
   * Listen to realtime events on this channel.
   * @category Realtime
   *
   * @remarks
   * - By default, Broadcast and Presence are enabled for all projects.
   * - By default, listening to database changes is disabled for new projects due to database performance and security concerns. You can turn it on by managing Realtime's [replication](/docs/guides/api#realtime-api-overview).
   * - You can receive the "previous" data for updates and deletes by setting the table's `REPLICA IDENTITY` to `FULL` (e.g., `ALTER TABLE your_table REPLICA IDENTITY FULL;`).
   * - Row level security is not applied to delete statements. When RLS is enabled and replica identity is set to full, only the primary key is sent to clients.
   *
   * @example Listen to broadcast messages
   * ```js
   * const channel = supabase.channel("room1")
   *
   * channel.on("broadcast", { event: "cursor-pos" }, (payload) => {
   *   console.log("Cursor position received!", payload);
   * }).subscribe((status) => {
   *   if (status === "SUBSCRIBED") {
   *     channel.send({
   *       type: "broadcast",
   *       event: "cursor-pos",
   *       payload: { x: Math.random(), y: Math.random() },
   *     });
   *   }
   * });
   * ```
   *
   * @example Listen to presence sync
   * ```js
   * const channel = supabase.channel('room1')
   * channel
   *   .on('presence', { event: 'sync' }, () => {
   *     console.log('Synced presence state: ', channel.presenceState())
   *   })
   *   .subscribe(async (status) => {
   *     if (status === 'SUBSCRIBED') {
   *       await channel.track({ online_at: new Date().toISOString() })
   *     }
   *   })
   * ```
   *
   * @example Listen to presence join
   * ```js
   * const channel = supabase.channel('room1')
   * channel
   *   .on('presence', { event: 'join' }, ({ newPresences }) => {
   *     console.log('Newly joined presences: ', newPresences)
   *   })
   *   .subscribe(async (status) => {
   *     if (status === 'SUBSCRIBED') {
   *       await channel.track({ online_at: new Date().toISOString() })
   *     }
   *   })
   * ```
   *
   * @example Listen to presence leave
   * ```js
   * const channel = supabase.channel('room1')
   * channel
   *   .on('presence', { event: 'leave' }, ({ leftPresences }) => {
   *     console.log('Newly left presences: ', leftPresences)
   *   })
   *   .subscribe(async (status) => {
   *     if (status === 'SUBSCRIBED') {
   *       await channel.track({ online_at: new Date().toISOString() })
   *       await channel.untrack()
   *     }
   *   })
   * ```
   *
   * Registering the same `postgres_changes` filter more than once on a channel is a no-op: the
   * duplicate is ignored and an error is logged, since the server only ever creates one
   * subscription per distinct filter.
   *
   * @example Listen to all database changes
   * ```js
   * supabase
   *   .channel('room1')
   *   .on('postgres_changes', { event: '*', schema: '*' }, payload => {
   *     console.log('Change received!', payload)
   *   })
   *   .subscribe()
   * ```
   *
   * @example Listen to a specific table
   * ```js
   * supabase
   *   .channel('room1')
   *   .on('postgres_changes', { event: '*', schema: 'public', table: 'countries' }, payload => {
   *     console.log('Change received!', payload)
   *   })
   *   .subscribe()
   * ```
   *
   * @example Listen to inserts
   * ```js
   * supabase
   *   .channel('room1')
   *   .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'countries' }, payload => {
   *     console.log('Change received!', payload)
   *   })
   *   .subscribe()
   * ```
   *
   * @exampleDescription Listen to updates
   * By default, Supabase will send only the updated record. If you want to receive the previous values as well you can
   * enable full replication for the table you are listening to:
   *
   * ```sql
   * alter table "your_table" replica identity full;
   * ```
   *
   * @example Listen to updates
   * ```js
   * supabase
   *   .channel('room1')
   *   .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'countries' }, payload => {
   *     console.log('Change received!', payload)
   *   })
   *   .subscribe()
   * ```
   *
   * @exampleDescription Listen to deletes
   * By default, Supabase does not send deleted records. If you want to receive the deleted record you can
   * enable full replication for the table you are listening to:
   *
   * ```sql
   * alter table "your_table" replica identity full;
   * ```
   *
   * @example Listen to deletes
   * ```js
   * supabase
   *   .channel('room1')
   *   .on('postgres_changes', { event: 'DELETE', schema: 'public', table: 'countries' }, payload => {
   *     console.log('Change received!', payload)
   *   })
   *   .subscribe()
   * ```
   *
   * @exampleDescription Listen to multiple events
   * You can chain listeners if you want to listen to multiple events for each table.
   *
   * @example Listen to multiple events
   * ```js
   * supabase
   *   .channel('room1')
   *   .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'countries' }, handleRecordInserted)
   *   .on('postgres_changes', { event: 'DELETE', schema: 'public', table: 'countries' }, handleRecordDeleted)
   *   .subscribe()
   * ```
   *
   * @exampleDescription Listen to row level changes
   * You can listen to individual rows using the format `{table}:{col}=eq.{val}` - where `{col}` is the column name, and `{val}` is the value which you want to match.
   *
   * @example Listen to row level changes
   * ```js
   * supabase
   *   .channel('room1')
   *   .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'countries', filter: 'id=eq.200' }, handleRecordUpdated)
   *   .subscribe()
   * ```
   */
  on(type, filter, callback) {
    const stateCheck = this.channelAdapter.isJoined() || this.channelAdapter.isJoining();
    const typeCheck = type === REALTIME_LISTEN_TYPES.PRESENCE || type === REALTIME_LISTEN_TYPES.POSTGRES_CHANGES;
    if (stateCheck && typeCheck) {
      this.socket.log("channel", `cannot add \`${type}\` callbacks for ${this.topic} after \`subscribe()\`.`);
      throw new Error(`cannot add \`${type}\` callbacks for ${this.topic} after \`subscribe()\`.`);
    }
    return this._on(type, filter, callback);
  }
  /**
   * Sends a broadcast message explicitly via REST API.
   *
   * This method always uses the REST API endpoint regardless of WebSocket connection state.
   * Useful when you want to guarantee REST delivery or when gradually migrating from implicit REST fallback.
   *
   * Payloads that are `ArrayBuffer` or `ArrayBufferView` (e.g. `Uint8Array`) are sent as
   * `application/octet-stream`; all other payloads are JSON-encoded.
   *
   * @param event The name of the broadcast event
   * @param payload Payload to be sent (required)
   * @param opts Options including timeout and persist
   * @returns Promise resolving to object with success status, and error details if failed
   *
   * @category Realtime
   */
  async httpSend(event, payload, opts = {}) {
    var _a;
    if (payload === void 0 || payload === null) {
      return Promise.reject(new Error("Payload is required for httpSend()"));
    }
    const isBinary = payload instanceof ArrayBuffer || ArrayBuffer.isView(payload);
    const headers = {
      apikey: this.socket.apiKey ? this.socket.apiKey : "",
      "Content-Type": isBinary ? "application/octet-stream" : "application/json"
    };
    if (this.socket.accessTokenValue) {
      headers["Authorization"] = `Bearer ${this.socket.accessTokenValue}`;
    }
    const url = new URL(this.broadcastEndpointURL);
    url.pathname += `/${encodeURIComponent(this.subTopic)}/events/${encodeURIComponent(event)}`;
    if (this.private) {
      url.searchParams.set("private", "true");
    }
    if (opts.persist) {
      if (!this.private) {
        return Promise.reject(new Error("Realtime httpSend() cannot store a message on a public channel."));
      }
      const ttl = typeof opts.persist === "object" ? opts.persist.ttl : void 0;
      if (ttl === void 0) {
        url.searchParams.set("persist", "true");
      } else {
        url.searchParams.set("persist[ttl]", String(ttl));
      }
    }
    const options = {
      method: "POST",
      headers,
      body: isBinary ? payload : JSON.stringify(payload)
    };
    const response = await this._fetchWithTimeout(url.toString(), options, (_a = opts.timeout) !== null && _a !== void 0 ? _a : this.timeout);
    if (response.status === 202) {
      return { success: true };
    }
    if (response.status === 404) {
      return Promise.reject(new Error("httpSend() requires Realtime server v2.97.0 or newer; the endpoint returned 404. Update your Supabase CLI to a recent version, or upgrade the Realtime server in your self-hosted setup. See https://github.com/supabase/supabase-js/blob/master/packages/core/realtime-js/migrations/httpsend-server-version.md"));
    }
    let errorMessage = response.statusText;
    try {
      const errorBody = await response.json();
      errorMessage = errorBody.error || errorBody.message || errorMessage;
    } catch (_b) {
    }
    return Promise.reject(new Error(errorMessage));
  }
  /**
   * Sends a message into the channel.
   *
   * @param args Arguments to send to channel
   * @param args.type The type of event to send
   * @param args.event The name of the event being sent
   * @param args.payload Payload to be sent
   * @param args.persist Stores the broadcast for replay on a private channel
   * @param opts Options to be used during the send process
   *
   * @category Realtime
   *
   * @remarks
   * - When using REST you don't need to subscribe to the channel
   * - REST calls are only available from 2.37.0 onwards
   * - If you create a channel only to send a REST broadcast, remove it from
   *   the client when the send completes
   *
   * @example Send a message via websocket
   * ```js
   * const channel = supabase.channel('room1')
   *
   * channel.subscribe((status) => {
   *   if (status === 'SUBSCRIBED') {
   *     channel.send({
   *       type: 'broadcast',
   *       event: 'cursor-pos',
   *       payload: { x: Math.random(), y: Math.random() },
   *     })
   *   }
   * })
   * ```
   *
   * @exampleResponse Send a message via websocket
   * ```js
   * ok | timed out | error
   * ```
   *
   * @example Send a message via REST
   * ```js
   * const channel = supabase.channel('room1')
   *
   * try {
   *   await channel.httpSend('cursor-pos', { x: Math.random(), y: Math.random() })
   * } finally {
   *   await supabase.removeChannel(channel)
   * }
   * ```
   */
  async send(args, opts = {}) {
    var _a, _b;
    if (args.type === "broadcast" && args.persist && (!this.private || this.socket.vsn === VSN_1_0_0)) {
      const persistError = this.private ? "Realtime send() cannot store a message with protocol 1.0.0. Use httpSend() or connect with vsn 2.0.0." : "Realtime send() cannot store a message on a public channel.";
      if (this.socket.hasLogger()) {
        this.socket.log("channel", persistError);
      } else {
        console.error(persistError);
      }
      return "error";
    }
    if (!this.channelAdapter.canPush() && args.type === "broadcast") {
      const fallbackWarning = "Realtime send() is automatically falling back to REST API. This behavior will be deprecated in the future. Please use httpSend() explicitly for REST delivery.";
      if (this.socket.hasLogger()) {
        this.socket.log("channel", fallbackWarning);
      } else {
        console.warn(fallbackWarning);
      }
      const { event, payload: endpoint_payload } = args;
      if (args.persist) {
        const persistError = "Realtime send() fell back to REST and cannot store this message. The batch endpoint does not support persistence. Use httpSend() or send after the channel is connected and subscribed.";
        if (this.socket.hasLogger()) {
          this.socket.log("channel", persistError);
        } else {
          console.error(persistError);
        }
        return "error";
      }
      const headers = {
        apikey: this.socket.apiKey ? this.socket.apiKey : "",
        "Content-Type": "application/json"
      };
      if (this.socket.accessTokenValue) {
        headers["Authorization"] = `Bearer ${this.socket.accessTokenValue}`;
      }
      const options = {
        method: "POST",
        headers,
        body: JSON.stringify({
          messages: [
            {
              topic: this.subTopic,
              event,
              payload: endpoint_payload,
              private: this.private
            }
          ]
        })
      };
      try {
        const response = await this._fetchWithTimeout(this.broadcastEndpointURL, options, (_a = opts.timeout) !== null && _a !== void 0 ? _a : this.timeout);
        await ((_b = response.body) === null || _b === void 0 ? void 0 : _b.cancel());
        return response.ok ? "ok" : "error";
      } catch (error) {
        if (error instanceof Error && error.name === "AbortError") {
          return "timed out";
        } else {
          return "error";
        }
      }
    } else {
      return new Promise((resolve) => {
        var _a2, _b2, _c;
        const push = this.channelAdapter.push(args.type, args, opts.timeout || this.timeout);
        if (args.type === "broadcast" && !((_c = (_b2 = (_a2 = this.params) === null || _a2 === void 0 ? void 0 : _a2.config) === null || _b2 === void 0 ? void 0 : _b2.broadcast) === null || _c === void 0 ? void 0 : _c.ack)) {
          resolve("ok");
        }
        push.receive("ok", () => resolve("ok"));
        push.receive("error", (response) => resolve(args.persist && typeof (response === null || response === void 0 ? void 0 : response.error) === "string" ? response.error : "error"));
        push.receive("timeout", () => resolve("timed out"));
      });
    }
  }
  /**
   * Updates the payload that will be sent the next time the channel joins (reconnects).
   * Useful for rotating access tokens or updating config without re-creating the channel.
   *
   * @category Realtime
   */
  updateJoinPayload(payload) {
    this.channelAdapter.updateJoinPayload(payload);
  }
  /**
   * Leaves the channel.
   *
   * Unsubscribes from server events, and instructs channel to terminate on server.
   * Triggers onClose() hooks.
   *
   * To receive leave acknowledgements, use the a `receive` hook to bind to the server ack, ie:
   * channel.unsubscribe().receive("ok", () => alert("left!") )
   *
   * @category Realtime
   */
  async unsubscribe(timeout = this.timeout) {
    return new Promise((resolve) => {
      this.channelAdapter.unsubscribe(timeout).receive("ok", () => resolve("ok")).receive("timeout", () => resolve("timed out")).receive("error", () => resolve("error"));
    });
  }
  /**
   * Destroys and stops related timers.
   *
   * @category Realtime
   */
  teardown() {
    this.channelAdapter.teardown();
  }
  /** @internal */
  async _fetchWithTimeout(url, options, timeout) {
    const controller = new AbortController();
    const id = setTimeout(() => controller.abort(), timeout);
    const response = await this.socket.fetch(url, Object.assign(Object.assign({}, options), { signal: controller.signal }));
    clearTimeout(id);
    return response;
  }
  /** @internal */
  _on(type, filter, callback) {
    var _a;
    const typeLower = type.toLocaleLowerCase();
    const filterValue = filter === null || filter === void 0 ? void 0 : filter.filter;
    if (filterValue instanceof RealtimePostgresFilterBuilder || typeof filterValue === "object" && filterValue !== null && typeof filterValue.build === "function") {
      filter = Object.assign(Object.assign({}, filter), { filter: filterValue.build() });
    }
    if (typeLower === REALTIME_LISTEN_TYPES.POSTGRES_CHANGES) {
      const duplicate = (_a = this.bindings[typeLower]) === null || _a === void 0 ? void 0 : _a.find((bind) => _RealtimeChannel.isSamePostgresFilter(bind.filter, filter));
      if (duplicate) {
        this.socket.log("error", `duplicate \`postgres_changes\` binding for ${this.topic} ignored`, filter);
        return this;
      }
    }
    const ref = this.channelAdapter.on(type, callback);
    const binding = {
      type: typeLower,
      filter,
      callback,
      ref
    };
    if (this.bindings[typeLower]) {
      this.bindings[typeLower].push(binding);
    } else {
      this.bindings[typeLower] = [binding];
    }
    this._updateFilterMessage();
    return this;
  }
  /**
   * Registers a callback that will be executed when the channel closes.
   *
   * @internal
   */
  _onClose(callback) {
    this.channelAdapter.onClose(callback);
  }
  /**
   * Registers a callback that will be executed when the channel encounteres an error.
   *
   * @internal
   */
  _onError(callback) {
    this.channelAdapter.onError(callback);
  }
  /** @internal */
  _updateFilterMessage() {
    this.channelAdapter.updateFilterBindings((binding, payload, ref) => {
      var _a, _b, _c, _d, _e, _f, _g;
      const typeLower = binding.event.toLocaleLowerCase();
      if (this._notThisChannelEvent(typeLower, ref)) {
        return false;
      }
      const bind = (_a = this.bindings[typeLower]) === null || _a === void 0 ? void 0 : _a.find((bind2) => bind2.ref === binding.ref);
      if (!bind) {
        return true;
      }
      if (["broadcast", "presence", "postgres_changes"].includes(typeLower)) {
        if ("id" in bind) {
          const bindId = bind.id;
          const bindEvent = (_b = bind.filter) === null || _b === void 0 ? void 0 : _b.event;
          return bindId && ((_c = payload.ids) === null || _c === void 0 ? void 0 : _c.includes(bindId)) && (bindEvent === "*" || (bindEvent === null || bindEvent === void 0 ? void 0 : bindEvent.toLocaleLowerCase()) === ((_d = payload.data) === null || _d === void 0 ? void 0 : _d.type.toLocaleLowerCase()));
        } else {
          const bindEvent = (_f = (_e = bind === null || bind === void 0 ? void 0 : bind.filter) === null || _e === void 0 ? void 0 : _e.event) === null || _f === void 0 ? void 0 : _f.toLocaleLowerCase();
          return bindEvent === "*" || bindEvent === ((_g = payload === null || payload === void 0 ? void 0 : payload.event) === null || _g === void 0 ? void 0 : _g.toLocaleLowerCase());
        }
      } else {
        return bind.type.toLocaleLowerCase() === typeLower;
      }
    });
  }
  /** @internal */
  _notThisChannelEvent(event, ref) {
    const { close, error, leave, join } = CHANNEL_EVENTS;
    const events = [close, error, leave, join];
    return ref && events.includes(event) && ref !== this.joinPush.ref;
  }
  /** @internal */
  _updateFilterTransform() {
    this.channelAdapter.updatePayloadTransform((event, payload, ref) => {
      if (typeof payload === "object" && "ids" in payload) {
        const postgresChanges = payload.data;
        const { schema, table, commit_timestamp, type, errors } = postgresChanges;
        const enrichedPayload = {
          schema,
          table,
          commit_timestamp,
          eventType: type,
          new: {},
          old: {},
          errors
        };
        return Object.assign(Object.assign({}, enrichedPayload), this._getPayloadRecords(postgresChanges));
      }
      return payload;
    });
  }
  copyBindings(other) {
    if (this.joinedOnce) {
      throw new Error("cannot copy bindings into joined channel");
    }
    for (const kind in other.bindings) {
      for (const binding of other.bindings[kind]) {
        this._on(binding.type, binding.filter, binding.callback);
      }
    }
  }
  /**
   * Compares two optional filter values for equality.
   * Treats undefined, null, and empty string as equivalent empty values.
   * @internal
   */
  static isFilterValueEqual(serverValue, clientValue) {
    const normalizedServer = serverValue !== null && serverValue !== void 0 ? serverValue : void 0;
    const normalizedClient = clientValue !== null && clientValue !== void 0 ? clientValue : void 0;
    return normalizedServer === normalizedClient;
  }
  /**
   * Two `postgres_changes` filters are the same when the server would collapse them into a single
   * subscription.
   * @internal
   */
  static isSamePostgresFilter(a, b) {
    var _a, _b, _c, _d;
    const selectA = (_b = (_a = a === null || a === void 0 ? void 0 : a.select) === null || _a === void 0 ? void 0 : _a.join()) !== null && _b !== void 0 ? _b : void 0;
    const selectB = (_d = (_c = b === null || b === void 0 ? void 0 : b.select) === null || _c === void 0 ? void 0 : _c.join()) !== null && _d !== void 0 ? _d : void 0;
    return (a === null || a === void 0 ? void 0 : a.event) === (b === null || b === void 0 ? void 0 : b.event) && _RealtimeChannel.isFilterValueEqual(a === null || a === void 0 ? void 0 : a.schema, b === null || b === void 0 ? void 0 : b.schema) && _RealtimeChannel.isFilterValueEqual(a === null || a === void 0 ? void 0 : a.table, b === null || b === void 0 ? void 0 : b.table) && _RealtimeChannel.isFilterValueEqual(a === null || a === void 0 ? void 0 : a.filter, b === null || b === void 0 ? void 0 : b.filter) && selectA === selectB;
  }
  /** @internal */
  _getPayloadRecords(payload) {
    const records = {
      new: {},
      old: {}
    };
    if (payload.type === "INSERT" || payload.type === "UPDATE") {
      records.new = convertChangeData(payload.columns, payload.record);
    }
    if (payload.type === "UPDATE" || payload.type === "DELETE") {
      records.old = convertChangeData(payload.columns, payload.old_record);
    }
    return records;
  }
};

// node_modules/@supabase/realtime-js/dist/module/phoenix/socketAdapter.js
var SocketAdapter = class {
  constructor(endPoint, options) {
    this.socket = new Socket(endPoint, options);
  }
  get timeout() {
    return this.socket.timeout;
  }
  get endPoint() {
    return this.socket.endPoint;
  }
  get transport() {
    return this.socket.transport;
  }
  get heartbeatIntervalMs() {
    return this.socket.heartbeatIntervalMs;
  }
  get heartbeatCallback() {
    return this.socket.heartbeatCallback;
  }
  set heartbeatCallback(callback) {
    this.socket.heartbeatCallback = callback;
  }
  get heartbeatTimer() {
    return this.socket.heartbeatTimer;
  }
  get pendingHeartbeatRef() {
    return this.socket.pendingHeartbeatRef;
  }
  get reconnectTimer() {
    return this.socket.reconnectTimer;
  }
  get vsn() {
    return this.socket.vsn;
  }
  get encode() {
    return this.socket.encode;
  }
  get decode() {
    return this.socket.decode;
  }
  get reconnectAfterMs() {
    return this.socket.reconnectAfterMs;
  }
  get sendBuffer() {
    return this.socket.sendBuffer;
  }
  get stateChangeCallbacks() {
    return this.socket.stateChangeCallbacks;
  }
  connect() {
    this.socket.connect();
  }
  disconnect(callback, code, reason, timeout = 1e4) {
    return new Promise((resolve) => {
      setTimeout(() => resolve("timeout"), timeout);
      this.socket.disconnect(() => {
        callback();
        resolve("ok");
      }, code, reason);
    });
  }
  push(data) {
    this.socket.push(data);
  }
  log(kind, msg, data) {
    this.socket.log(kind, msg, data);
  }
  hasLogger() {
    return this.socket.hasLogger();
  }
  makeRef() {
    return this.socket.makeRef();
  }
  onOpen(callback) {
    this.socket.onOpen(callback);
  }
  onClose(callback) {
    this.socket.onClose(callback);
  }
  onError(callback) {
    this.socket.onError(callback);
  }
  onMessage(callback) {
    this.socket.onMessage(callback);
  }
  isConnected() {
    return this.socket.isConnected();
  }
  isConnecting() {
    return this.socket.connectionState() == CONNECTION_STATE.connecting;
  }
  isDisconnecting() {
    return this.socket.connectionState() == CONNECTION_STATE.closing;
  }
  connectionState() {
    return this.socket.connectionState();
  }
  endPointURL() {
    return this.socket.endPointURL();
  }
  sendHeartbeat() {
    this.socket.sendHeartbeat();
  }
  /**
   * @internal
   */
  getSocket() {
    return this.socket;
  }
};

// node_modules/@supabase/realtime-js/dist/module/RealtimeClient.js
var CONNECTION_TIMEOUTS = {
  HEARTBEAT_INTERVAL: 25e3,
  RECONNECT_DELAY: 10,
  HEARTBEAT_TIMEOUT_FALLBACK: 100
};
var RECONNECT_INTERVALS = [1e3, 2e3, 5e3, 1e4];
var DEFAULT_RECONNECT_FALLBACK = 1e4;
function createMemorySessionStorage() {
  const store = /* @__PURE__ */ new Map();
  return {
    get length() {
      return store.size;
    },
    clear() {
      store.clear();
    },
    getItem(key) {
      return store.has(key) ? store.get(key) : null;
    },
    key(index) {
      var _a;
      return (_a = Array.from(store.keys())[index]) !== null && _a !== void 0 ? _a : null;
    },
    removeItem(key) {
      store.delete(key);
    },
    setItem(key, value) {
      store.set(key, String(value));
    }
  };
}
function resolveSessionStorage() {
  try {
    if (typeof globalThis !== "undefined" && globalThis.sessionStorage) {
      return globalThis.sessionStorage;
    }
  } catch (_a) {
  }
  return createMemorySessionStorage();
}
var WORKER_SCRIPT = `
  addEventListener("message", (e) => {
    if (e.data.event === "start") {
      setInterval(() => postMessage({ event: "keepAlive" }), e.data.interval);
    }
  });`;
var RealtimeClient = class {
  get endPoint() {
    return this.socketAdapter.endPoint;
  }
  get timeout() {
    return this.socketAdapter.timeout;
  }
  get transport() {
    return this.socketAdapter.transport;
  }
  get heartbeatCallback() {
    return this.socketAdapter.heartbeatCallback;
  }
  get heartbeatIntervalMs() {
    return this.socketAdapter.heartbeatIntervalMs;
  }
  get heartbeatTimer() {
    if (this.worker) {
      return this._workerHeartbeatTimer;
    }
    return this.socketAdapter.heartbeatTimer;
  }
  get pendingHeartbeatRef() {
    if (this.worker) {
      return this._pendingWorkerHeartbeatRef;
    }
    return this.socketAdapter.pendingHeartbeatRef;
  }
  get reconnectTimer() {
    return this.socketAdapter.reconnectTimer;
  }
  get vsn() {
    return this.socketAdapter.vsn;
  }
  get encode() {
    return this.socketAdapter.encode;
  }
  get decode() {
    return this.socketAdapter.decode;
  }
  get reconnectAfterMs() {
    return this.socketAdapter.reconnectAfterMs;
  }
  get sendBuffer() {
    return this.socketAdapter.sendBuffer;
  }
  get stateChangeCallbacks() {
    return this.socketAdapter.stateChangeCallbacks;
  }
  /**
   * Initializes the Socket.
   *
   * @param endPoint The string WebSocket endpoint, ie, "ws://example.com/socket", "wss://example.com", "/socket" (inherited host & protocol)
   * @param options.transport The Websocket Transport, for example WebSocket. This can be a custom implementation
   * @param options.timeout The default timeout in milliseconds to trigger push timeouts.
   * @param options.params The optional params to pass when connecting.
   * @param options.headers Deprecated: headers cannot be set on websocket connections and this option will be removed in the future.
   * @param options.heartbeatIntervalMs The millisec interval to send a heartbeat message.
   * @param options.heartbeatCallback The optional function to handle heartbeat status and latency.
   * @param options.logger The optional function for specialized logging, ie: logger: (kind, msg, data) => { console.log(`${kind}: ${msg}`, data) }
   * @param options.logLevel Sets the log level for Realtime
   * @param options.encode The function to encode outgoing messages. Defaults to JSON: (payload, callback) => callback(JSON.stringify(payload))
   * @param options.decode The function to decode incoming messages. Defaults to Serializer's decode.
   * @param options.reconnectAfterMs he optional function that returns the millsec reconnect interval. Defaults to stepped backoff off.
   * @param options.worker Use Web Worker to set a side flow. Defaults to false.
   * @param options.workerUrl The URL of the worker script. Defaults to https://realtime.supabase.com/worker.js that includes a heartbeat event call to keep the connection alive.
   * @param options.vsn The protocol version to use when connecting. Supported versions are "1.0.0" and "2.0.0". Defaults to "2.0.0".
   *
   * @category Realtime
   *
   * @example Using supabase-js (recommended)
   * ```ts
   * import { createClient } from '@supabase/supabase-js'
   *
   * const supabase = createClient('https://xyzcompany.supabase.co', 'your-publishable-key')
   * const channel = supabase.channel('room1')
   * channel
   *   .on('broadcast', { event: 'cursor-pos' }, (payload) => console.log(payload))
   *   .subscribe()
   * ```
   *
   * @example Standalone import for bundle-sensitive environments
   * ```ts
   * import RealtimeClient from '@supabase/realtime-js'
   *
   * const client = new RealtimeClient('https://xyzcompany.supabase.co/realtime/v1', {
   *   params: { apikey: 'your-publishable-key' },
   * })
   * client.connect()
   * ```
   */
  constructor(endPoint, options) {
    var _a;
    this.channels = new Array();
    this.accessTokenValue = null;
    this.accessToken = null;
    this.apiKey = null;
    this.httpEndpoint = "";
    this.headers = {};
    this.params = {};
    this.ref = 0;
    this.serializer = new serializer_default();
    this._manuallySetToken = false;
    this._authPromise = null;
    this._authGeneration = 0;
    this._workerHeartbeatTimer = void 0;
    this._pendingWorkerHeartbeatRef = null;
    this._pendingDisconnectTimer = null;
    this._disconnectOnEmptyChannelsAfterMs = 0;
    this._resolveFetch = (customFetch) => {
      if (customFetch) {
        return (...args) => customFetch(...args);
      }
      return (...args) => fetch(...args);
    };
    if (!((_a = options === null || options === void 0 ? void 0 : options.params) === null || _a === void 0 ? void 0 : _a.apikey)) {
      throw new Error("API key is required to connect to Realtime");
    }
    this.apiKey = options.params.apikey;
    const socketAdapterOptions = this._initializeOptions(options);
    this.socketAdapter = new SocketAdapter(endPoint, socketAdapterOptions);
    this.httpEndpoint = httpEndpointURL(endPoint);
    this.fetch = this._resolveFetch(options === null || options === void 0 ? void 0 : options.fetch);
  }
  /**
   * Connects the socket, unless already connected.
   *
   * @category Realtime
   */
  connect() {
    if (this.isConnecting() || this.isDisconnecting() || this.isConnected()) {
      return;
    }
    if (this.accessToken && !this._authPromise) {
      this._setAuthSafely("connect");
    }
    this._setupConnectionHandlers();
    try {
      this.socketAdapter.connect();
    } catch (error) {
      const errorMessage = error.message;
      throw new Error(`WebSocket not available: ${errorMessage}`);
    }
    this._handleNodeJsRaceCondition();
  }
  /**
   * Returns the URL of the websocket.
   * @returns string The URL of the websocket.
   *
   * @category Realtime
   */
  endpointURL() {
    return this.socketAdapter.endPointURL();
  }
  /**
   * Disconnects the socket.
   *
   * @param code A numeric status code to send on disconnect.
   * @param reason A custom reason for the disconnect.
   *
   * @category Realtime
   */
  async disconnect(code, reason) {
    this._cancelPendingDisconnect();
    if (this.isDisconnecting()) {
      return "ok";
    }
    return await this.socketAdapter.disconnect(() => {
      clearInterval(this._workerHeartbeatTimer);
      this._terminateWorker();
    }, code, reason);
  }
  /**
   * Returns all created channels
   *
   * @category Realtime
   */
  getChannels() {
    return this.channels;
  }
  /**
   * Unsubscribes, removes and tears down a single channel
   * @param channel A RealtimeChannel instance
   *
   * @category Realtime
   */
  async removeChannel(channel) {
    const status = await channel.unsubscribe();
    if (status === "ok") {
      channel.teardown();
    }
    return status;
  }
  /**
   * Unsubscribes, removes and tears down all channels
   *
   * @category Realtime
   */
  async removeAllChannels() {
    const promises = this.channels.map(async (channel) => {
      const result2 = await channel.unsubscribe();
      channel.teardown();
      return result2;
    });
    const result = await Promise.all(promises);
    await this.disconnect();
    return result;
  }
  /**
   * Logs the message.
   *
   * For customized logging, `this.logger` can be overridden in Client constructor.
   *
   * @category Realtime
   */
  log(kind, msg, data) {
    this.socketAdapter.log(kind, msg, data);
  }
  /**
   * Returns true if a custom `logger` has been configured on this client.
   *
   * @category Realtime
   */
  hasLogger() {
    return this.socketAdapter.hasLogger();
  }
  /**
   * Returns the current state of the socket.
   *
   * @category Realtime
   */
  connectionState() {
    return this.socketAdapter.connectionState() || CONNECTION_STATE.closed;
  }
  /**
   * Returns `true` is the connection is open.
   *
   * @category Realtime
   */
  isConnected() {
    return this.socketAdapter.isConnected();
  }
  /**
   * Returns `true` if the connection is currently connecting.
   *
   * @category Realtime
   */
  isConnecting() {
    return this.socketAdapter.isConnecting();
  }
  /**
   * Returns `true` if the connection is currently disconnecting.
   *
   * @category Realtime
   */
  isDisconnecting() {
    return this.socketAdapter.isDisconnecting();
  }
  /**
   * Creates (or reuses) a {@link RealtimeChannel} for the provided topic.
   *
   * Topics are automatically prefixed with `realtime:` to match the Realtime service.
   * If a channel with the same topic already exists it will be returned instead of creating
   * a duplicate connection.
   *
   * @category Realtime
   */
  channel(topic, params = { config: {} }) {
    const realtimeTopic = `realtime:${topic}`;
    const exists = this.getChannels().find((c) => c.topic === realtimeTopic);
    if (!exists) {
      const chan = new RealtimeChannel(`realtime:${topic}`, params, this);
      this._cancelPendingDisconnect();
      this.channels.push(chan);
      return chan;
    } else {
      return exists;
    }
  }
  /**
   * Push out a message if the socket is connected.
   *
   * If the socket is not connected, the message gets enqueued within a local buffer, and sent out when a connection is next established.
   *
   * @category Realtime
   */
  push(data) {
    this.socketAdapter.push(data);
  }
  /**
   * Sets the JWT access token used for channel subscription authorization and Realtime RLS.
   *
   * If param is null it will use the `accessToken` callback function or the token set on the client.
   *
   * On callback used, it will set the value of the token internal to the client.
   *
   * When a token is explicitly provided AND no `accessToken` callback is configured,
   * it will be preserved across channel operations (including removeChannel and
   * resubscribe) and the client stays in manual-token mode.
   *
   * When an `accessToken` callback IS configured, the callback is the source of truth:
   * the client remains in callback mode and continues to refresh from it on heartbeat,
   * even after a bootstrap/override `setAuth(token)` call.
   *
   * The callback is called on connect and on every heartbeat (`heartbeatIntervalMs`,
   * default 25000ms). Its token must stay valid past the next call, or the server closes
   * the channel at expiry with no automatic resubscribe.
   *
   * @param token A JWT string to override the token set on the client.
   *
   * @example Setting the authorization header
   * // Use a manual token (preserved across resubscribes when no accessToken callback is set)
   * client.realtime.setAuth('my-custom-jwt')
   *
   * // Switch back to using the accessToken callback
   * client.realtime.setAuth()
   *
   * @category Realtime
   */
  async setAuth(token = null) {
    const authGeneration = ++this._authGeneration;
    const authPromise = this._performAuth(token, authGeneration);
    if (authGeneration === this._authGeneration) {
      this._authPromise = authPromise;
    }
    try {
      await authPromise;
    } finally {
      if (this._authPromise === authPromise) {
        this._authPromise = null;
      }
    }
  }
  /**
   * Returns true if the current access token was explicitly set via setAuth(token),
   * false if it was obtained via the accessToken callback.
   * @internal
   */
  _isManualToken() {
    return this._manuallySetToken;
  }
  /**
   * Sends a heartbeat message if the socket is connected.
   *
   * @category Realtime
   */
  async sendHeartbeat() {
    this.socketAdapter.sendHeartbeat();
  }
  /**
   * Sets a callback that receives lifecycle events for internal heartbeat messages.
   * Useful for instrumenting connection health (e.g. sent/ok/timeout).
   *
   * @category Realtime
   */
  onHeartbeat(callback) {
    this.socketAdapter.heartbeatCallback = this._wrapHeartbeatCallback(callback);
  }
  /**
   * Return the next message ref, accounting for overflows
   *
   * @internal
   */
  _makeRef() {
    return this.socketAdapter.makeRef();
  }
  /**
   * Removes a channel from RealtimeClient
   *
   * @param channel An open subscription.
   *
   * @internal
   */
  _remove(channel) {
    this.channels = this.channels.filter((c) => c.topic !== channel.topic);
    if (this.channels.length === 0) {
      this.log("transport", "no channels remaining, scheduling disconnect");
      this._schedulePendingDisconnect();
    }
  }
  /** @internal */
  _schedulePendingDisconnect() {
    this._cancelPendingDisconnect();
    if (this._disconnectOnEmptyChannelsAfterMs === 0) {
      this.log("transport", "disconnecting immediately - no channels");
      this.disconnect();
      return;
    }
    this._pendingDisconnectTimer = setTimeout(() => {
      this._pendingDisconnectTimer = null;
      if (this.channels.length === 0) {
        this.log("transport", "deferred disconnect fired - no channels, disconnecting");
        this.disconnect();
      }
    }, this._disconnectOnEmptyChannelsAfterMs);
    this.log("transport", `deferred disconnect scheduled in ${this._disconnectOnEmptyChannelsAfterMs}ms`);
  }
  /** @internal */
  _cancelPendingDisconnect() {
    if (this._pendingDisconnectTimer !== null) {
      this.log("transport", "pending disconnect cancelled - channel activity detected");
      clearTimeout(this._pendingDisconnectTimer);
      this._pendingDisconnectTimer = null;
    }
  }
  /**
   * Perform the actual auth operation
   * @internal
   */
  async _performAuth(token, authGeneration) {
    let tokenToSend;
    let isManualToken = false;
    if (token) {
      tokenToSend = token;
      isManualToken = true;
    } else if (this.accessToken) {
      try {
        tokenToSend = await this.accessToken();
      } catch (e) {
        this.log("error", "Error fetching access token from callback", e);
        tokenToSend = this.accessTokenValue;
      }
    } else {
      tokenToSend = this.accessTokenValue;
    }
    if (authGeneration !== this._authGeneration) {
      return;
    }
    if (this.accessToken) {
      this._manuallySetToken = false;
    } else if (isManualToken) {
      this._manuallySetToken = true;
    }
    if (this.accessTokenValue != tokenToSend) {
      this.accessTokenValue = tokenToSend;
      this.channels.forEach((channel) => {
        const payload = {
          access_token: tokenToSend,
          version: DEFAULT_VERSION
        };
        channel.updateJoinPayload(payload);
        if (channel.joinedOnce && channel.channelAdapter.isJoined()) {
          channel.channelAdapter.push(CHANNEL_EVENTS.access_token, {
            access_token: tokenToSend
          });
        }
      });
    }
  }
  /**
   * Wait for any in-flight auth operations to complete
   * @internal
   */
  async _waitForAuthIfNeeded() {
    if (this._authPromise) {
      await this._authPromise;
    }
  }
  /**
   * Safely call setAuth with standardized error handling
   * @internal
   */
  _setAuthSafely(context = "general") {
    if (!this._isManualToken()) {
      this.setAuth().catch((e) => {
        this.log("error", `Error setting auth in ${context}`, e);
      });
    }
  }
  /** @internal */
  _setupConnectionHandlers() {
    this.socketAdapter.onOpen(() => {
      const authPromise = this._authPromise || (this.accessToken && !this.accessTokenValue ? this.setAuth() : Promise.resolve());
      authPromise.catch((e) => {
        this.log("error", "error waiting for auth on connect", e);
      });
      if (this.worker && !this.workerRef) {
        this._startWorkerHeartbeat();
      }
    });
    this.socketAdapter.onClose(() => {
      if (this.worker && this.workerRef) {
        this._terminateWorker();
      }
    });
    this.socketAdapter.onMessage((message) => {
      if (message.ref && message.ref === this._pendingWorkerHeartbeatRef) {
        this._pendingWorkerHeartbeatRef = null;
      }
    });
  }
  /** @internal */
  _handleNodeJsRaceCondition() {
    if (this.socketAdapter.isConnected()) {
      this.socketAdapter.getSocket().onConnOpen();
    }
  }
  /** @internal */
  _wrapHeartbeatCallback(heartbeatCallback) {
    return (status, latency) => {
      if (status === "disconnected")
        return;
      if (status == "sent")
        this._setAuthSafely();
      if (heartbeatCallback)
        heartbeatCallback(status, latency);
    };
  }
  /** @internal */
  _startWorkerHeartbeat() {
    if (this.workerUrl) {
      this.log("worker", `starting worker for from ${this.workerUrl}`);
    } else {
      this.log("worker", `starting default worker`);
    }
    const objectUrl = this._workerObjectUrl(this.workerUrl);
    this.workerRef = new Worker(objectUrl);
    this.workerRef.onerror = (error) => {
      this.log("worker", "worker error", error.message);
      this._terminateWorker();
      this.disconnect();
    };
    this.workerRef.onmessage = (event) => {
      if (event.data.event === "keepAlive") {
        this.sendHeartbeat();
      }
    };
    this.workerRef.postMessage({
      event: "start",
      interval: this.heartbeatIntervalMs
    });
  }
  /**
   * Terminate the Web Worker and clear the reference
   * @internal
   */
  _terminateWorker() {
    if (this.workerRef) {
      this.log("worker", "terminating worker");
      this.workerRef.terminate();
      this.workerRef = void 0;
    }
  }
  /** @internal */
  _workerObjectUrl(url) {
    let result_url;
    if (url) {
      result_url = url;
    } else {
      const blob = new Blob([WORKER_SCRIPT], { type: "application/javascript" });
      result_url = URL.createObjectURL(blob);
    }
    return result_url;
  }
  /**
   * Initialize socket options with defaults
   * @internal
   */
  _initializeOptions(options) {
    var _a, _b, _c, _d, _e, _f, _g, _h, _j, _k, _l, _m;
    this.worker = (_a = options === null || options === void 0 ? void 0 : options.worker) !== null && _a !== void 0 ? _a : false;
    this.accessToken = (_b = options === null || options === void 0 ? void 0 : options.accessToken) !== null && _b !== void 0 ? _b : null;
    const result = {};
    result.timeout = (_c = options === null || options === void 0 ? void 0 : options.timeout) !== null && _c !== void 0 ? _c : DEFAULT_TIMEOUT;
    result.heartbeatIntervalMs = (_d = options === null || options === void 0 ? void 0 : options.heartbeatIntervalMs) !== null && _d !== void 0 ? _d : CONNECTION_TIMEOUTS.HEARTBEAT_INTERVAL;
    this._disconnectOnEmptyChannelsAfterMs = (_e = options === null || options === void 0 ? void 0 : options.disconnectOnEmptyChannelsAfterMs) !== null && _e !== void 0 ? _e : 2 * ((_f = options === null || options === void 0 ? void 0 : options.heartbeatIntervalMs) !== null && _f !== void 0 ? _f : CONNECTION_TIMEOUTS.HEARTBEAT_INTERVAL);
    result.transport = (_g = options === null || options === void 0 ? void 0 : options.transport) !== null && _g !== void 0 ? _g : websocket_factory_default.getWebSocketConstructor();
    result.params = options === null || options === void 0 ? void 0 : options.params;
    result.logger = options === null || options === void 0 ? void 0 : options.logger;
    result.heartbeatCallback = this._wrapHeartbeatCallback(options === null || options === void 0 ? void 0 : options.heartbeatCallback);
    result.sessionStorage = (_h = options === null || options === void 0 ? void 0 : options.sessionStorage) !== null && _h !== void 0 ? _h : resolveSessionStorage();
    result.reconnectAfterMs = (_j = options === null || options === void 0 ? void 0 : options.reconnectAfterMs) !== null && _j !== void 0 ? _j : ((tries) => {
      return RECONNECT_INTERVALS[tries - 1] || DEFAULT_RECONNECT_FALLBACK;
    });
    let defaultEncode;
    let defaultDecode;
    const vsn = (_k = options === null || options === void 0 ? void 0 : options.vsn) !== null && _k !== void 0 ? _k : DEFAULT_VSN;
    switch (vsn) {
      case VSN_1_0_0:
        defaultEncode = (payload, callback) => {
          return callback(JSON.stringify(payload));
        };
        defaultDecode = (payload, callback) => {
          return callback(JSON.parse(payload));
        };
        break;
      case VSN_2_0_0:
        defaultEncode = this.serializer.encode.bind(this.serializer);
        defaultDecode = this.serializer.decode.bind(this.serializer);
        break;
      default:
        throw new Error(`Unsupported serializer version: ${vsn}`);
    }
    result.vsn = vsn;
    result.encode = (_l = options === null || options === void 0 ? void 0 : options.encode) !== null && _l !== void 0 ? _l : defaultEncode;
    result.decode = (_m = options === null || options === void 0 ? void 0 : options.decode) !== null && _m !== void 0 ? _m : defaultDecode;
    result.beforeReconnect = this._reconnectAuth.bind(this);
    if ((options === null || options === void 0 ? void 0 : options.logLevel) || (options === null || options === void 0 ? void 0 : options.log_level)) {
      this.logLevel = options.logLevel || options.log_level;
      result.params = Object.assign(Object.assign({}, result.params), { log_level: this.logLevel });
    }
    if (this.worker) {
      if (typeof window !== "undefined" && !window.Worker) {
        throw new Error("Web Worker is not supported");
      }
      this.workerUrl = options === null || options === void 0 ? void 0 : options.workerUrl;
      result.autoSendHeartbeat = !this.worker;
    }
    return result;
  }
  /** @internal */
  async _reconnectAuth() {
    await this._waitForAuthIfNeeded();
    if (!this.isConnected()) {
      this.connect();
    }
  }
};

// src/errors.ts
var RealtimeError = class extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
};
var ConnectionLostError = class extends RealtimeError {
};
var JoinRefusedError = class extends RealtimeError {
  constructor(topic, reason) {
    super(`${topic}: ${reason}`);
    this.topic = topic;
    this.reason = reason;
  }
};
var ChannelError = class extends RealtimeError {
  constructor(topic, message) {
    super(`${topic}: ${message}`);
    this.topic = topic;
  }
};
var ChannelClosedError = class extends ChannelError {
};
var HistoryLostError = class extends RealtimeError {
  constructor(topic, position) {
    super(`${topic}: history after position ${position} is lost; reload`);
    this.topic = topic;
    this.position = position;
  }
};
var ApiError = class extends RealtimeError {
  constructor(status, code, message, retryAfter, options) {
    super(message, options);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
};

// src/events.ts
function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function req(row, key) {
  const value = row[key];
  if (value === void 0 || value === null) {
    throw new TypeError(`the change has no ${key}`);
  }
  return String(value);
}
function opt(row, column, key) {
  const value = row[column];
  return value === void 0 || value === null ? {} : { [key]: String(value) };
}
function oneOf(value, allowed, what) {
  if (typeof value === "string" && allowed.includes(value)) {
    return value;
  }
  throw new TypeError(`unexpected ${what}: ${String(value)}`);
}
var SENDERS = ["customer", "staff"];
var DELIVERY = ["sent", "delivered", "read", "failed"];
var PRESENCE = ["online", "away", "offline"];
var CHANGES = ["INSERT", "UPDATE", "DELETE"];
var STATUSES = ["open", "pending", "resolved", "closed"];
function attachmentsOf(value) {
  return Array.isArray(value) ? value.filter(isObject) : [];
}
function nullable(row, key) {
  const value = row[key];
  return value === void 0 || value === null ? null : String(value);
}
function conversationOf(row) {
  return {
    id: req(row, "id"),
    customerId: req(row, "customer_id"),
    subject: nullable(row, "subject"),
    status: oneOf(row["status"], STATUSES, "conversation status"),
    assignedUserId: nullable(row, "assigned_user_id"),
    createdAt: req(row, "created_at"),
    updatedAt: req(row, "updated_at")
  };
}
function previousOf(value) {
  if (!isObject(value)) return {};
  try {
    return { previous: conversationOf(value) };
  } catch {
    return {};
  }
}
function parseTimestamp(value) {
  const hasZone = /(?:[zZ]|[+-]\d\d(?::?\d\d)?)$/.test(value);
  return Date.parse(hasZone ? value : `${value}Z`);
}
function eventFromChange(data, now = Date.now()) {
  const change = data.type === void 0 ? "INSERT" : oneOf(data.type, CHANGES, "change type");
  const deleted = change === "DELETE";
  const source = deleted ? data.old_record : data.record;
  const row = isObject(source) ? source : {};
  const position = typeof data.position === "number" && Number.isInteger(data.position) ? { position: data.position } : {};
  switch (data.table) {
    case "customer_messages":
      if (deleted) return null;
      return {
        kind: "message",
        event: {
          id: req(row, "id"),
          conversationId: req(row, "conversation_id"),
          content: typeof row["content"] === "string" ? row["content"] : "",
          senderType: oneOf(row["sender_type"], SENDERS, "sender_type"),
          senderId: req(row, "sender_id"),
          createdAt: req(row, "created_at"),
          attachments: attachmentsOf(row["attachments"]),
          ...opt(row, "client_message_id", "clientMessageId"),
          ...opt(row, "edited_at", "editedAt"),
          ...opt(row, "deleted_at", "deletedAt"),
          change,
          ...position
        }
      };
    case "message_read_receipts":
      if (deleted) return null;
      return {
        kind: "readReceipt",
        event: {
          id: req(row, "id"),
          messageId: req(row, "message_id"),
          ...opt(row, "read_by_user_id", "readByUserId"),
          ...opt(row, "read_by_customer_id", "readByCustomerId"),
          readAt: req(row, "read_at"),
          conversationId: req(row, "conversation_id"),
          ...position
        }
      };
    case "message_typing_indicators": {
      const expiresAt = req(row, "expires_at");
      const expiry = parseTimestamp(expiresAt);
      const isTyping = !deleted && row["is_typing"] === true && (Number.isNaN(expiry) || expiry > now);
      return {
        kind: "typing",
        event: {
          id: req(row, "id"),
          conversationId: req(row, "conversation_id"),
          ...opt(row, "user_id", "userId"),
          ...opt(row, "customer_id", "customerId"),
          isTyping,
          startedAt: req(row, "started_at"),
          expiresAt,
          change,
          ...position
        }
      };
    }
    case "message_delivery_status":
      return {
        kind: "deliveryStatus",
        event: {
          id: req(row, "id"),
          messageId: req(row, "message_id"),
          conversationId: req(row, "conversation_id"),
          status: oneOf(row["status"], DELIVERY, "delivery status"),
          recipientType: oneOf(row["recipient_type"], SENDERS, "recipient_type"),
          recipientId: req(row, "recipient_id"),
          ...opt(row, "delivered_at", "deliveredAt"),
          ...opt(row, "read_at", "readAt"),
          ...opt(row, "failed_reason", "failedReason"),
          change,
          ...position
        }
      };
    case "user_presence":
      return {
        kind: "presence",
        event: {
          id: req(row, "id"),
          ...opt(row, "user_id", "userId"),
          ...opt(row, "customer_id", "customerId"),
          // A deleted presence row (its user or customer was deleted) is nobody online.
          status: deleted ? "offline" : oneOf(row["status"], PRESENCE, "presence status"),
          lastSeenAt: req(row, "last_seen_at"),
          metadata: isObject(row["metadata"]) ? row["metadata"] : {},
          ...position
        }
      };
    case "conversations":
      return {
        kind: "conversation",
        event: {
          type: change,
          conversation: conversationOf(row),
          ...change === "UPDATE" ? previousOf(data.old_record) : {},
          ...position
        }
      };
    default:
      return null;
  }
}
function messageFromApi(value, change = "INSERT") {
  const m = isObject(value) ? value : {};
  return {
    id: req(m, "id"),
    conversationId: req(m, "conversationId"),
    content: typeof m["content"] === "string" ? m["content"] : "",
    senderType: oneOf(m["senderType"], SENDERS, "senderType"),
    senderId: req(m, "senderId"),
    createdAt: req(m, "createdAt"),
    attachments: attachmentsOf(m["attachments"]),
    ...opt(m, "clientMessageId", "clientMessageId"),
    ...opt(m, "editedAt", "editedAt"),
    ...opt(m, "deletedAt", "deletedAt"),
    change,
    ...deliveryOf(m["delivery"])
  };
}
function deliveryOf(value) {
  const status = isObject(value) ? value["status"] : void 0;
  return typeof status === "string" && DELIVERY.includes(status) ? { deliveryStatus: status } : {};
}
function presenceFromApi(value) {
  const p = isObject(value) ? value : {};
  return {
    id: req(p, "id"),
    ...opt(p, "userId", "userId"),
    ...opt(p, "customerId", "customerId"),
    status: oneOf(p["status"], PRESENCE, "presence status"),
    lastSeenAt: req(p, "lastSeenAt"),
    metadata: isObject(p["metadata"]) ? p["metadata"] : {}
  };
}
function participantOf(event) {
  return event.userId ?? event.customerId;
}

// src/http.ts
function isObject2(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function parseRetryAfter(header, now = Date.now()) {
  if (header === null || header.trim() === "") return void 0;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const at = Date.parse(header);
  return Number.isNaN(at) ? void 0 : Math.max(0, (at - now) / 1e3);
}
var Http = class {
  constructor(options) {
    this.options = options;
  }
  /**
   * `method path` with an optional JSON body; resolves to the envelope's `data`. Rejects with
   * ApiError: the server's code and message, or status 0 when no answer came (network down,
   * timeout), so callers catch one class. `raw`: a body sent as is instead (an upload), with
   * its content type and, for a large one, a longer timeout.
   */
  async request(method, path, body, raw) {
    const { baseUrl, anonKey, token, fetch: fetch2 } = this.options;
    const timeoutMs = raw?.timeoutMs ?? this.options.timeoutMs;
    const headers = { apikey: anonKey, Accept: "application/json" };
    const bearer = token();
    if (bearer) headers["Authorization"] = `Bearer ${bearer}`;
    const init = { method, headers };
    if (raw !== void 0) {
      headers["Content-Type"] = raw.contentType;
      init.body = raw.body;
    } else if (body !== void 0) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    init.signal = controller.signal;
    let response;
    let text;
    try {
      response = await fetch2(baseUrl + path, init);
      text = await response.text();
    } catch (cause) {
      const message = controller.signal.aborted ? `${method} ${path}: no answer within ${timeoutMs} ms` : `${method} ${path}: ${cause instanceof Error ? cause.message : String(cause)}`;
      throw new ApiError(0, "network_error", message, void 0, { cause });
    } finally {
      clearTimeout(timer);
    }
    let envelope = void 0;
    try {
      envelope = text === "" ? void 0 : JSON.parse(text);
    } catch {
    }
    if (response.ok && isObject2(envelope) && envelope["success"] !== false) {
      return envelope["data"];
    }
    const error = isObject2(envelope) && isObject2(envelope["error"]) ? envelope["error"] : {};
    throw new ApiError(
      response.status,
      typeof error["code"] === "string" ? error["code"] : "http_error",
      typeof error["message"] === "string" ? error["message"] : response.statusText || `HTTP ${response.status}`,
      parseRetryAfter(response.headers.get("Retry-After"))
    );
  }
};

// src/identity.ts
function base64UrlDecode(part) {
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - base64.length % 4) % 4);
  const binary = atob(padded);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}
function identityOfToken(token) {
  if (!token) return null;
  if (token.startsWith("pt_")) return { kind: "customer" };
  const payload = token.split(".")[1];
  if (payload === void 0) return null;
  let claims;
  try {
    claims = JSON.parse(base64UrlDecode(payload));
  } catch {
    return null;
  }
  if (typeof claims !== "object" || claims === null) return null;
  const { customer_id: customerId, role, sub } = claims;
  if (typeof customerId === "string" && customerId) return { kind: "customer", customerId };
  if (role === "authenticated" && typeof sub === "string" && sub) {
    return { kind: "staff", userId: sub };
  }
  return null;
}

// src/subscription.ts
var Subscription = class {
  constructor(owner, handlers, fallback, release) {
    this.owner = owner;
    this.handlers = handlers;
    this.fallback = fallback;
    this.release = release;
    this.closed = false;
    /** Handlers run one event at a time, in order, even when they are async. */
    this.queue = Promise.resolve();
    this.topic = owner.name;
    this.listener = {
      deliver: (event) => this.enqueue(() => this.handle(event)),
      fail: (error) => this.enqueue(() => this.handleError(error)),
      rejoined: (event) => this.enqueue(() => this.handleRejoin(event)),
      close: () => {
        this.closed = true;
      }
    };
    owner.listeners.add(this.listener);
  }
  /** `joining`, `joined`, `errored` (refused, or reconnecting), `leaving` or `closed`. */
  get state() {
    return this.closed ? "closed" : this.owner.state;
  }
  /**
   * Resolves once changes flow (the server confirmed the PostgreSQL subscription); rejects
   * when the join is refused or the subscription ends first. Awaiting it is optional.
   */
  get ready() {
    return this.owner.ready;
  }
  /** The last change position the topic received: where it resumes after a reconnect. */
  get lastPosition() {
    return this.owner.lastPosition;
  }
  /** Stop the handlers; the channel is left when no other subscription shares it. */
  async unsubscribe() {
    if (this.closed) return;
    this.closed = true;
    await this.release(this, this.listener);
  }
  enqueue(task) {
    if (this.closed) return;
    this.queue = this.queue.then(task);
  }
  async handle(item) {
    if (this.closed) return;
    try {
      switch (item.kind) {
        case "message":
          await this.handlers.onMessage?.(item.event);
          break;
        case "readReceipt":
          await this.handlers.onReadReceipt?.(item.event);
          break;
        case "typing":
          await this.handlers.onTyping?.(item.event);
          break;
        case "deliveryStatus":
          await this.handlers.onDeliveryStatus?.(item.event);
          break;
        case "presence":
          await this.handlers.onPresence?.(item.event);
          break;
        case "conversation":
          await this.handlers.onConversation?.(item.event);
          break;
      }
    } catch (error) {
      await this.handleError(error instanceof Error ? error : new RealtimeError(String(error)));
    }
  }
  async handleRejoin(event) {
    if (this.closed) return;
    try {
      await this.handlers.onRejoin?.(event);
    } catch (error) {
      await this.handleError(error instanceof Error ? error : new RealtimeError(String(error)));
    }
  }
  async handleError(error) {
    const onError = this.handlers.onError;
    if (onError === void 0) {
      this.fallback(error);
      return;
    }
    try {
      await onError(error);
    } catch (failure) {
      this.fallback(failure instanceof Error ? failure : new RealtimeError(String(failure)));
    }
  }
};

// src/presence.ts
var PresenceView = class {
  constructor(emit) {
    this.emit = emit;
    /** The latest row of each participant (from changes, or the initial snapshot). */
    this.rows = /* @__PURE__ */ new Map();
    /** Who the Phoenix presence lists now, with their status. */
    this.live = /* @__PURE__ */ new Map();
    /** The merged status: what isOnline answers. */
    this.current = /* @__PURE__ */ new Map();
    this.kinds = /* @__PURE__ */ new Map();
    this.firstSeen = /* @__PURE__ */ new Map();
    /**
     * The conversation's participants: whoever was on the channel or in the snapshot. A staff
     * identity sees every presence row of the installation; only these are reported.
     */
    this.participants = /* @__PURE__ */ new Set();
  }
  /** A `user_presence` change. */
  row(event) {
    const id = participantOf(event);
    if (id === void 0) return;
    this.rows.set(id, event);
    this.current.set(id, event.status);
    if (this.participants.has(id)) this.emit(this.eventFor(id));
  }
  /** The participants' rows when the channel joined (`GET /api/conversations/{id}/presence`). */
  snapshot(rows) {
    for (const row of rows) {
      const id = participantOf(row);
      if (id === void 0) continue;
      this.participants.add(id);
      if (this.rows.has(id)) continue;
      this.rows.set(id, row);
      if (this.live.has(id)) continue;
      const before = this.current.get(id);
      this.current.set(id, row.status);
      if (before !== row.status) this.emit(this.eventFor(id));
    }
  }
  /** A Phoenix presence sync: compare with what was listed before, report the differences. */
  sync(state) {
    const now = /* @__PURE__ */ new Map();
    for (const [key, metas] of Object.entries(state)) {
      let status = "away";
      for (const meta of metas) {
        const kind = meta["kind"];
        if (kind === "staff" || kind === "customer") this.kinds.set(key, kind);
        if (meta["status"] !== "away") status = "online";
      }
      now.set(key, status);
    }
    for (const [id, status] of now) {
      if (this.live.get(id) === status) continue;
      this.live.set(id, status);
      const known = this.participants.has(id);
      this.participants.add(id);
      if (!this.firstSeen.has(id)) this.firstSeen.set(id, (/* @__PURE__ */ new Date()).toISOString());
      this.update(id, status, !known);
    }
    for (const id of [...this.live.keys()]) {
      if (now.has(id)) continue;
      this.live.delete(id);
      this.update(id, this.rows.get(id)?.status ?? "offline", false);
    }
  }
  /** Report a participant when their status changed (the row and the channel often agree). */
  update(id, status, arrived) {
    const before = this.current.get(id);
    this.current.set(id, status);
    if (arrived || before !== status) this.emit(this.eventFor(id));
  }
  list() {
    return [...this.participants].map((id) => this.eventFor(id));
  }
  isOnline(id) {
    return this.current.get(id) === "online";
  }
  eventFor(id) {
    const status = this.current.get(id) ?? "offline";
    const row = this.rows.get(id);
    if (row !== void 0) return { ...row, status };
    const who = this.kinds.get(id) === "staff" ? { userId: id } : { customerId: id };
    return { id, ...who, status, lastSeenAt: this.firstSeen.get(id) ?? (/* @__PURE__ */ new Date()).toISOString() };
  }
};

// src/topic.ts
function isObject3(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
var MAX_TYPING_WAIT_MS = 35e3;
var Topic = class {
  constructor(name, bindings, host) {
    this.name = name;
    this.bindings = bindings;
    this.host = host;
    this.listeners = /* @__PURE__ */ new Set();
    this.channel = null;
    /** The last change position seen: where a rejoin resumes. */
    this.lastPosition = null;
    this.ready = Promise.resolve();
    this.settleReady = () => {
    };
    /** Set when the channel ended for good: refused, closed by the server, or left. */
    this.ended = null;
    this.leaving = false;
    /** The join's refusal, seen in its reply just before realtime-js reports CHANNEL_ERROR. */
    this.refusal = null;
    this.crashed = false;
    /** A connection loss was reported and the channel has not joined since. */
    this.outage = false;
    this.typingTimers = /* @__PURE__ */ new Map();
    /** The presence snapshot is read once per open, not on every rejoin (resume covers those). */
    this.snapshotLoaded = false;
    /** A join was confirmed already: the next confirmed one is a rejoin. */
    this.subscribedOnce = false;
    /** The server said, during the current join, that history after the position is lost. */
    this.historyLost = false;
    this.presence = name.startsWith("presence:") ? new PresenceView((event) => this.broadcast({ kind: "presence", event })) : null;
  }
  get state() {
    if (this.ended !== null) return this.ended;
    return this.channel?.state ?? "closed";
  }
  /** Whether the channel ended for good and only `reopen` brings it back. */
  get isEnded() {
    return this.ended !== null;
  }
  /** Join a new channel, resuming after `lastPosition` when there is one. */
  open() {
    this.restart();
    this.join();
  }
  /** Join again after the channel ended (a new token may be allowed what the old one was not). */
  async reopen() {
    this.restart();
    const channel = this.channel;
    this.channel = null;
    if (channel !== null) await this.remove(channel);
    if (this.ended === null) this.join();
  }
  restart() {
    this.ended = null;
    this.leaving = false;
    this.refusal = null;
    this.crashed = false;
    this.outage = false;
    this.snapshotLoaded = false;
    this.ready = new Promise((resolve, reject) => {
      this.settleReady = (error) => {
        this.settleReady = () => {
        };
        if (error) reject(error);
        else resolve();
      };
    });
    this.ready.catch(() => {
    });
  }
  join() {
    const client = this.host.client();
    const options = {};
    if (this.lastPosition !== null) options["resume"] = { position: this.lastPosition };
    const channel = client.channel(this.name, {
      config: {
        // ack: the server answers typing broadcasts, refusals included.
        broadcast: { ack: true, self: false },
        presence: { key: "", enabled: this.presence !== null },
        private: false,
        postgres_changes_options: options
      }
    });
    this.channel = channel;
    for (const binding of this.bindings) {
      channel.on("postgres_changes", binding, () => {
      });
    }
    const presence = this.presence;
    if (presence !== null) {
      channel.on("presence", { event: "sync" }, () => {
        if (this.channel === channel) presence.sync(channel.presenceState());
      });
    }
    channel.subscribe((status, error) => {
      if (this.channel === channel) this.onStatus(channel, status, error);
    }, this.host.timeoutMs);
  }
  /** Leave the channel (unsubscribe); the topic can be opened again afterwards. */
  async close() {
    this.leaving = true;
    this.ended = "closed";
    this.clearTyping();
    this.settleReady(new ChannelClosedError(this.name, "unsubscribed"));
    const channel = this.channel;
    this.channel = null;
    if (channel !== null) await this.remove(channel);
  }
  /** Leave a channel unless realtime-js already dropped it (closed by the server, refused). */
  async remove(channel) {
    const client = this.host.client();
    if (client.getChannels().includes(channel)) await client.removeChannel(channel);
  }
  /** A frame of this topic, seen by the socket's decoder before realtime-js handles it. */
  observe(frame) {
    const channel = this.channel;
    if (channel === null) return;
    const joinRef = channel.joinPush.ref;
    const payload = isObject3(frame.payload) ? frame.payload : {};
    if (frame.event === "phx_reply") {
      if (frame.ref == null || frame.ref !== joinRef) return;
      if (payload["status"] === "error") {
        const response = payload["response"];
        const reason = isObject3(response) ? response["reason"] : response;
        this.refusal = typeof reason === "string" ? reason : JSON.stringify(reason);
        return;
      }
      this.historyLost = false;
      if (payload["status"] === "ok" && this.bindings.length === 0) {
        this.settleReady();
      }
      return;
    }
    if (typeof frame.join_ref === "string" && joinRef != null && frame.join_ref !== joinRef) return;
    switch (frame.event) {
      case "postgres_changes":
        if (isObject3(payload["data"])) this.acceptChange(payload["data"]);
        break;
      case "system":
        this.acceptSystem(payload);
        break;
      case "phx_error":
        this.crashed = true;
        break;
    }
  }
  acceptChange(data) {
    const position = data.position;
    if (typeof position === "number" && Number.isInteger(position)) {
      if (this.lastPosition !== null && position <= this.lastPosition) return;
      this.advance(position);
    }
    let event;
    try {
      event = eventFromChange(data);
    } catch (cause) {
      this.fail(new RealtimeError(`unexpected change from the server: ${String(cause)}`, { cause }));
      return;
    }
    if (event === null) return;
    if (event.kind === "presence" && this.presence !== null) {
      this.presence.row(event.event);
      return;
    }
    this.broadcast(event);
  }
  acceptSystem(payload) {
    const status = payload["status"];
    const message = String(payload["message"] ?? "");
    if (payload["extension"] !== "postgres_changes") {
      if (status === "error") this.fail(new ChannelError(this.name, message));
      return;
    }
    if (status !== "ok") {
      const error = new ChannelError(this.name, message);
      this.settleReady(error);
      this.fail(error);
      return;
    }
    const position = payload["position"];
    const at = typeof position === "number" && Number.isInteger(position) ? position : null;
    if (payload["history_lost"] === true) {
      this.historyLost = true;
      this.fail(new HistoryLostError(this.name, at));
      return;
    }
    const complete = this.lastPosition !== null && !this.historyLost;
    this.historyLost = false;
    if (at !== null && (this.lastPosition === null || at > this.lastPosition)) this.advance(at);
    this.settleReady();
    if (this.presence !== null && !this.snapshotLoaded) {
      this.snapshotLoaded = true;
      void this.loadPresence(this.presence);
    }
    if (this.subscribedOnce) this.rejoined(complete);
    this.subscribedOnce = true;
  }
  rejoined(complete) {
    const event = { topic: this.name, complete };
    const conversation = /^(?:conversation|presence):(.+)$/.exec(this.name)?.[1];
    if (conversation !== void 0) event.conversationId = conversation;
    if (this.lastPosition !== null) event.position = this.lastPosition;
    for (const listener of this.listeners) listener.rejoined(event);
  }
  /** Remember the position and put it in the join payload, for whatever rejoin comes next. */
  advance(position) {
    this.lastPosition = position;
    const channel = this.channel;
    if (channel === null) return;
    const current = channel.joinPush.payload();
    const config = isObject3(current["config"]) ? current["config"] : {};
    const options = isObject3(config["postgres_changes_options"]) ? config["postgres_changes_options"] : {};
    channel.updateJoinPayload({
      config: { ...config, postgres_changes_options: { ...options, resume: { position } } }
    });
  }
  async loadPresence(view) {
    try {
      const rows = await this.host.presenceSnapshot(this.name.slice("presence:".length));
      if (rows !== null && !this.isEnded) view.snapshot(rows);
    } catch (error) {
      this.fail(error instanceof Error ? error : new RealtimeError(String(error)));
    }
  }
  onStatus(channel, status, error) {
    switch (status) {
      case REALTIME_SUBSCRIBE_STATES.SUBSCRIBED:
        this.outage = false;
        this.crashed = false;
        if (this.bindings.length === 0) this.settleReady();
        return;
      case REALTIME_SUBSCRIBE_STATES.CHANNEL_ERROR: {
        if (this.refusal !== null) {
          const refused = new JoinRefusedError(this.name, this.refusal);
          this.refusal = null;
          this.end("errored", refused);
          void this.remove(channel);
          return;
        }
        if (this.crashed) {
          this.crashed = false;
          this.fail(new ChannelError(this.name, "channel crashed on the server; rejoining"));
          return;
        }
        if (!this.outage) {
          this.outage = true;
          const message = error?.message ? `: ${error.message}` : "";
          this.fail(new ConnectionLostError(`${this.name}: connection lost${message}; reconnecting`));
        }
        return;
      }
      case REALTIME_SUBSCRIBE_STATES.TIMED_OUT:
        if (!this.outage) {
          this.outage = true;
          this.fail(new ConnectionLostError(`${this.name}: no join reply in time; retrying`));
        }
        return;
      case REALTIME_SUBSCRIBE_STATES.CLOSED:
        if (this.leaving || this.ended !== null) return;
        this.end("closed", new ChannelClosedError(this.name, "closed by the server"));
        return;
    }
  }
  end(state, error) {
    this.ended = state;
    this.clearTyping();
    this.settleReady(error);
    this.fail(error);
  }
  /** Hand an event to every listener (after the manager saw it). */
  broadcast(event) {
    if (event.kind === "typing" && !this.acceptTyping(event.event)) return;
    this.deliver(event);
  }
  deliver(event) {
    this.host.observe(event);
    for (const listener of this.listeners) listener.deliver(event);
  }
  fail(error) {
    if (this.listeners.size === 0) {
      this.host.report(error);
      return;
    }
    for (const listener of this.listeners) listener.fail(error);
  }
  /**
   * Typing as a UI wants it: one `isTyping: true` when a participant starts and one
   * `isTyping: false` when they stop, per burst; false if the event should not be delivered.
   * The feed carries more (a refresh every few seconds, the stop, the row's deletion at
   * expiry); a participant types while a timer runs here (`typingTimers`).
   *
   * Typing ends at `expiresAt` unless a newer change says otherwise. The server deletes expired
   * indicators itself, but a client must not show someone typing for as long as that change
   * takes (or while the connection is down).
   */
  acceptTyping(event) {
    if (this.host.ownTyping(event)) return false;
    const key = `${event.conversationId}:${participantOf(event) ?? event.id}`;
    const timer = this.typingTimers.get(key);
    if (timer !== void 0) clearTimeout(timer);
    this.typingTimers.delete(key);
    if (!event.isTyping) return timer !== void 0;
    this.setTypingTimer(key, event);
    return timer === void 0;
  }
  setTypingTimer(key, event) {
    const wait = Math.min(Math.max(0, parseTimestamp(event.expiresAt) - Date.now()), MAX_TYPING_WAIT_MS);
    this.typingTimers.set(
      key,
      setTimeout(() => {
        this.typingTimers.delete(key);
        const { position: _position, ...rest } = event;
        this.deliver({ kind: "typing", event: { ...rest, isTyping: false, change: "UPDATE" } });
      }, Number.isNaN(wait) ? 0 : wait)
    );
  }
  clearTyping() {
    for (const timer of this.typingTimers.values()) clearTimeout(timer);
    this.typingTimers.clear();
  }
};

// src/manager.ts
var MESSAGE_TABLES = [
  { event: "INSERT", schema: "public", table: "customer_messages" },
  // Edits and deletes (tombstones) of messages already sent.
  { event: "UPDATE", schema: "public", table: "customer_messages" },
  { event: "INSERT", schema: "public", table: "message_read_receipts" },
  { event: "*", schema: "public", table: "message_typing_indicators" },
  { event: "*", schema: "public", table: "message_delivery_status" }
];
var OWN_TABLES = [
  ...MESSAGE_TABLES,
  { event: "*", schema: "public", table: "conversations" }
];
var PRESENCE_TABLES = [{ event: "*", schema: "public", table: "user_presence" }];
var PRESENCE_OF_MOST = 100;
var UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
var ACKED_MEMORY = 1e4;
var MAX_BATCH = 500;
function socketUrl(httpUrl) {
  const url = new URL(httpUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/realtime/v1`;
  url.search = "";
  url.hash = "";
  return url.toString();
}
var QUICK_RETRIES_MS = [10, 50, 100];
var QUICK_ATTEMPTS = 66;
function reconnectDelay(tries) {
  const jitter = 0.5 + Math.random() / 2;
  if (tries <= QUICK_ATTEMPTS) {
    const step = QUICK_RETRIES_MS[Math.min(Math.max(tries, 1), QUICK_RETRIES_MS.length) - 1] ?? 100;
    return Math.round(step * jitter);
  }
  return Math.round(Math.min(3e4, 500 * 2 ** Math.min(tries - QUICK_ATTEMPTS - 1, 16)) * jitter);
}
function isObject4(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
var RealtimeMessagingManager = class {
  constructor(url, anonKey, options = {}) {
    this.realtime = null;
    this.topics = /* @__PURE__ */ new Map();
    /** Pushes waiting for their reply, by ref. */
    this.pending = /* @__PURE__ */ new Map();
    this.refs = 0;
    /** Topics made by subscribeToCustomersPresence and subscribeToStaffPresence so far (a set each). */
    this.presenceLists = 0;
    this.closed = false;
    this.identity = null;
    /** Acknowledged message ids, oldest first (bounded). */
    this.acked = /* @__PURE__ */ new Set();
    this.toAck = [];
    this.ackTimer = null;
    this.ackDelayMs = 500;
    this.flushing = null;
    this.url = url.replace(/\/+$/, "");
    this.anonKey = anonKey;
    this.token = options.accessToken ?? null;
    this.me = identityOfToken(this.token);
    this.options = options;
    const timeoutMs = options.timeoutMs ?? 1e4;
    const userFetch = options.fetch;
    this.http = new Http({
      baseUrl: this.url,
      anonKey,
      token: () => this.token,
      // Resolved per call, unbound: a stored window.fetch called as a method throws.
      fetch: userFetch ?? ((input, init) => fetch(input, init)),
      timeoutMs: options.requestTimeoutMs ?? 3e4
    });
    this.host = {
      timeoutMs,
      client: () => this.client(),
      observe: (event) => this.observe(event),
      report: (error) => this.report(error),
      presenceSnapshot: (conversationId) => this.presenceSnapshot(conversationId),
      ownTyping: (event) => this.ownTyping(event)
    };
  }
  /** The current access token. */
  get accessToken() {
    return this.token;
  }
  /**
   * Whether a typing event is this user's own and is not wanted. A customer sees only their own
   * conversations, each of which has one customer: any customer's typing there is theirs, even
   * behind an opaque portal token.
   */
  ownTyping(event) {
    if (this.options.includeOwnTyping === true) return false;
    const me = this.me;
    if (me === null) return false;
    if (me.kind === "customer") {
      return event.customerId !== void 0 && (me.customerId ?? event.customerId) === event.customerId;
    }
    return event.userId !== void 0 && event.userId === me.userId;
  }
  // -- subscriptions -----------------------------------------------------------------------
  /**
   * A customer's messages, receipts, typing and delivery status, and their conversations'
   * changes: `customer:<id>:messages`.
   */
  subscribeToCustomerMessages(customerId, handlers = {}) {
    return this.subscribe(`customer:${customerId}:messages`, OWN_TABLES, handlers);
  }
  /**
   * What a staff user sees (every conversation's events and changes): `staff:<id>:messages`.
   */
  subscribeToStaffMessages(userId, handlers = {}) {
    return this.subscribe(`staff:${userId}:messages`, OWN_TABLES, handlers);
  }
  /** One conversation: `conversation:<id>`, filtered on the server to that conversation. */
  subscribeToConversation(conversationId, handlers = {}) {
    const filter = `conversation_id=eq.${conversationId}`;
    return this.subscribe(
      `conversation:${conversationId}`,
      MESSAGE_TABLES.map((binding) => ({ ...binding, filter })),
      handlers
    );
  }
  /**
   * Presence in a conversation: `presence:<id>`. Joining it makes this user present there (the
   * server tracks them by itself); `userId`/`customerId` are the documented arguments, the
   * token says who it is. `onPresence` gets every change; `getPresence` and `isOnline` read
   * the merged view.
   */
  subscribeToPresence(conversationId, userId, customerId, onPresence) {
    void userId;
    void customerId;
    const handlers = typeof onPresence === "function" ? { onPresence } : onPresence ?? {};
    return this.subscribe(`presence:${conversationId}`, PRESENCE_TABLES, handlers);
  }
  /**
   * The presence of these customers, live (a staff user's list of conversations: the dots of
   * the customers shown, not only of the open conversation). One channel on a topic of this
   * manager's own, whose binding names the customers (`customer_id=in.(…)`): the first
   * {@link PRESENCE_OF_MOST} of them, ids that are not UUIDs left out. A new set is a new
   * subscription: unsubscribe the old one. Staff and the service role see these rows; a
   * customer sees only its own, so for a customer the channel carries nothing else.
   */
  subscribeToCustomersPresence(customerIds, onPresence) {
    return this.presenceOf("customers", "customer_id", customerIds, onPresence);
  }
  /**
   * The presence of these staff users, live (a customer's list of conversations: the dots of
   * its agents). Filtered on the server (`user_id=in.(…)`), the first {@link PRESENCE_OF_MOST},
   * as for customers. Staff see every staff row; a customer sees those of the staff of its
   * conversations (assigned to one or who wrote in one) as of the subscription's join, so a new
   * agent is a new set: subscribe again.
   */
  subscribeToStaffPresence(userIds, onPresence) {
    return this.presenceOf("staff", "user_id", userIds, onPresence);
  }
  presenceOf(kind, column, values, onPresence) {
    const ids = [...new Set(values.filter((id) => UUID.test(id)))].slice(0, PRESENCE_OF_MOST);
    const handlers = typeof onPresence === "function" ? { onPresence } : onPresence;
    const filter = `${column}=in.(${ids.join(",")})`;
    const bindings = PRESENCE_TABLES.map((binding) => ({ ...binding, filter }));
    return this.subscribe(`${kind}-presence:${++this.presenceLists}`, bindings, handlers);
  }
  /** Leave a topic (`'customer:<id>:messages'`, with or without `realtime:`); false if none. */
  async unsubscribe(channelName) {
    const topic = this.topics.get(channelName.replace(/^realtime:/, ""));
    if (topic === void 0) return false;
    for (const listener of topic.listeners) listener.close();
    topic.listeners.clear();
    await this.drop(topic);
    return true;
  }
  async unsubscribeAll() {
    await Promise.all([...this.topics.keys()].map((name) => this.unsubscribe(name)));
  }
  subscribe(name, bindings, handlers) {
    this.ensureOpen();
    let topic = this.topics.get(name);
    if (topic === void 0) {
      topic = new Topic(name, bindings, this.host);
      topic.open();
      this.topics.set(name, topic);
    } else if (topic.isEnded) {
      void topic.reopen().catch((error) => this.report(asError(error)));
    }
    return new Subscription(
      topic,
      handlers,
      (error) => this.report(error),
      (_, listener) => this.release(topic, listener)
    );
  }
  async release(topic, listener) {
    topic.listeners.delete(listener);
    if (topic.listeners.size === 0 && this.topics.get(topic.name) === topic) await this.drop(topic);
  }
  async drop(topic) {
    this.topics.delete(topic.name);
    try {
      await topic.close();
    } catch (error) {
      this.report(asError(error));
    }
  }
  // -- the socket --------------------------------------------------------------------------
  /** The RealtimeClient, created on first use (REST-only use needs no WebSocket). */
  client() {
    if (this.realtime !== null) return this.realtime;
    const options = {
      params: { apikey: this.anonKey },
      // 1.0.0: JSON frames both ways. Under 2.0.0 realtime-js sends broadcasts as binary
      // frames, which the server relays but does not take as typing indicators.
      vsn: "1.0.0",
      decode: (raw, callback) => callback(this.decode(raw)),
      timeout: this.host.timeoutMs,
      heartbeatIntervalMs: this.options.heartbeatIntervalMs ?? 25e3,
      reconnectAfterMs: this.options.reconnectAfterMs ?? reconnectDelay
    };
    if (this.options.transport !== void 0) options.transport = this.options.transport;
    const client = new RealtimeClient(socketUrl(this.url), options);
    if (this.token) void client.setAuth(this.token);
    this.realtime = client;
    return client;
  }
  /**
   * Decode a frame and look at it before realtime-js does: changes still carry their position
   * here, join replies their refusal reason, push replies the ref they answer.
   */
  decode(raw) {
    let frame;
    try {
      frame = typeof raw === "string" ? JSON.parse(raw) : null;
    } catch (cause) {
      this.report(new RealtimeError("malformed frame from the server", { cause }));
    }
    const topic = isObject4(frame) ? frame["topic"] : void 0;
    const event = isObject4(frame) ? frame["event"] : void 0;
    if (!isObject4(frame) || typeof topic !== "string" || typeof event !== "string") {
      return { topic: "", event: "", payload: {} };
    }
    const message = { ...frame, topic, event, payload: frame["payload"] };
    try {
      this.observeFrame(message);
    } catch (error) {
      this.report(new RealtimeError(`handling ${message.event} failed: ${String(error)}`, { cause: error }));
    }
    return message;
  }
  observeFrame(frame) {
    if (frame.event === "phx_reply" && typeof frame.ref === "string") {
      const resolve = this.pending.get(frame.ref);
      if (resolve !== void 0) {
        const payload = isObject4(frame.payload) ? frame.payload : {};
        resolve({ status: String(payload["status"]), response: payload["response"] });
        return;
      }
    }
    this.topics.get(frame.topic.replace(/^realtime:/, ""))?.observe(frame);
  }
  /** Send `event` on a joined topic and wait for its reply. */
  push(topic, event, payload) {
    const channel = topic.channel;
    const client = this.realtime;
    if (channel === null || client === null || !client.isConnected()) {
      return Promise.reject(new RealtimeError(`${topic.name} is not joined`));
    }
    const ref = `rtm:${++this.refs}`;
    const timeoutMs = this.host.timeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RealtimeError(`${event} on ${topic.name}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(ref, (reply) => {
        clearTimeout(timer);
        this.pending.delete(ref);
        if (reply instanceof Error) reject(reply);
        else resolve(reply);
      });
      const joinRef = channel.joinPush.ref;
      client.push({ topic: channel.topic, event, payload, ref, ...joinRef ? { join_ref: joinRef } : {} });
    });
  }
  // -- calls -------------------------------------------------------------------------------
  api(method, path, body) {
    this.ensureOpen();
    return this.http.request(method, path, body);
  }
  /** Send a message as the token's owner; resolves to the created message. */
  async sendMessage(conversationId, content, options = {}) {
    const body = { content };
    if (options.attachments !== void 0) body["attachments"] = options.attachments;
    if (options.attachmentIds !== void 0) body["attachmentIds"] = options.attachmentIds;
    if (options.clientMessageId !== void 0) body["clientMessageId"] = options.clientMessageId;
    return messageFromApi(await this.api("POST", `/api/conversations/${enc(conversationId)}/messages`, body));
  }
  /**
   * Replace the content of one's own message within the server's edit window; resolves to the
   * message (`editedAt` set). Subscribers get it through `onMessage` as an `UPDATE`.
   */
  async editMessage(messageId, content) {
    const data = await this.api("PATCH", `/api/messages/${enc(messageId)}`, { content });
    return messageFromApi(data, "UPDATE");
  }
  /**
   * Delete a message, leaving a tombstone in its place (`deletedAt` set, content and attachments
   * emptied); deleting it again resolves to the same tombstone.
   */
  async deleteMessage(messageId) {
    return messageFromApi(await this.api("DELETE", `/api/messages/${enc(messageId)}`), "UPDATE");
  }
  /**
   * Upload a file to a conversation (docs/files.md); resolves to its details, whose `id` goes
   * in `sendMessage(conversationId, '', { attachmentIds: [id] })`. A `Blob` or `File` is
   * streamed by fetch, and names its type and filename unless the options do.
   */
  async uploadAttachment(conversationId, data, options = {}) {
    this.ensureOpen();
    const named = typeof File !== "undefined" && data instanceof File ? data.name : void 0;
    const typed = typeof Blob !== "undefined" && data instanceof Blob ? data.type : "";
    const query = new URLSearchParams({ filename: options.filename ?? named ?? "attachment" });
    const uploaded = await this.http.request(
      "POST",
      `/api/conversations/${enc(conversationId)}/attachments?${query}`,
      void 0,
      {
        body: data,
        contentType: options.contentType ?? (typed || "application/octet-stream"),
        timeoutMs: options.timeoutMs ?? 6e5
      }
    );
    return uploaded;
  }
  /** A file's details and a signed download URL, valid for a few minutes (participants only). */
  async getAttachmentUrl(attachmentId) {
    const data = await this.api("GET", `/api/attachments/${enc(attachmentId)}`);
    return data;
  }
  /** A page of history, newest first, and the cursor of the next (older) page. */
  async getMessages(conversationId, options = {}) {
    const query = new URLSearchParams({ limit: String(options.limit ?? 50) });
    if (options.before) query.set("before", options.before);
    const data = await this.api("GET", `/api/conversations/${enc(conversationId)}/messages?${query}`);
    const page = isObject4(data) ? data : {};
    const messages = Array.isArray(page["messages"]) ? page["messages"].map((m) => messageFromApi(m)) : [];
    const cursor = page["nextCursor"];
    return { messages, nextCursor: typeof cursor === "string" ? cursor : null };
  }
  /**
   * Start (it expires after 5 s) or stop typing; the token says who types.
   *
   * Over the socket when a joined subscription covers the conversation (its own topic, or this
   * user's messages topic): the indicator is then tied to the connection and ends if it drops.
   * Otherwise over HTTP. Refusals reject with ApiError either way (429 for the rate limit).
   */
  async sendTypingIndicator(conversationId, userId, customerId, isTyping = true) {
    void userId;
    void customerId;
    this.ensureOpen();
    const topic = this.typingTopic(conversationId);
    if (topic === null) {
      await this.api("POST", `/api/conversations/${enc(conversationId)}/typing`, { isTyping });
      return;
    }
    const reply = await this.push(topic, "broadcast", {
      type: "broadcast",
      event: "typing",
      payload: { isTyping, conversationId }
    });
    if (reply.status === "ok") return;
    const response = reply.response;
    const reason = String(isObject4(response) ? response["reason"] ?? JSON.stringify(response) : response);
    if (/limit/i.test(reason)) {
      const retry = /retry in (\d+(?:\.\d+)?) s/.exec(reason)?.[1];
      throw new ApiError(429, "rate_limited", reason, retry === void 0 ? void 0 : Number(retry));
    }
    throw new ApiError(422, "refused", reason);
  }
  /** A joined topic on which the server takes typing for this conversation. */
  typingTopic(conversationId) {
    if (this.realtime === null || !this.realtime.isConnected()) return null;
    let own = null;
    for (const topic of this.topics.values()) {
      if (topic.state !== "joined") continue;
      if (topic.name === `conversation:${conversationId}`) return topic;
      if (own === null && topic.name.endsWith(":messages")) own = topic;
    }
    return own;
  }
  /** Mark one message read as the token's owner (idempotent). */
  async markMessageAsRead(messageId, userId, customerId) {
    void userId;
    void customerId;
    await this.api("POST", `/api/messages/${enc(messageId)}/read`);
  }
  /** Mark up to 500 messages read in one request (all or nothing); resolves to their ids. */
  async markMessagesAsRead(messageIds) {
    const data = await this.api("POST", "/api/messages/read", { messageIds: [...messageIds] });
    return idsOf(data);
  }
  /** Set this user's presence; resolves to their presence row. */
  async updatePresence(userId, customerId, status, metadata) {
    void userId;
    void customerId;
    const body = { status };
    if (metadata !== void 0) body["metadata"] = metadata;
    return presenceFromApi(await this.api("PUT", "/api/presence", body));
  }
  /**
   * Messages the caller may see that match `q` (web-search syntax: words, "a phrase", -not),
   * best first, and the cursor of the next page. `snippet` is HTML: the text escaped, the
   * matched words in `<mark>`.
   */
  async search(q, options = {}) {
    const query = new URLSearchParams({ q, limit: String(options.limit ?? 20) });
    if (options.conversationId) query.set("conversationId", options.conversationId);
    if (options.cursor) query.set("cursor", options.cursor);
    const data = await this.api("GET", `/api/search?${query}`);
    const page = isObject4(data) ? data : {};
    const results = Array.isArray(page["results"]) ? page["results"] : [];
    const cursor = page["nextCursor"];
    return { results, nextCursor: typeof cursor === "string" ? cursor : null };
  }
  /**
   * A page of conversations, latest activity first, filtered by status, assignee (a staff
   * user's id, `'mine'` or `'unassigned'`) and unread; and the cursor of the next page.
   */
  async listConversations(options = {}) {
    const query = new URLSearchParams({ limit: String(options.limit ?? 50) });
    if (options.status) query.set("status", options.status);
    if (options.assignee) query.set("assignee", options.assignee);
    if (options.unread !== void 0) query.set("unread", String(options.unread));
    if (options.before) query.set("before", options.before);
    const data = await this.api("GET", `/api/conversations?${query}`);
    const page = isObject4(data) ? data : {};
    const conversations = Array.isArray(page["conversations"]) ? page["conversations"] : [];
    const cursor = page["nextCursor"];
    return { conversations, nextCursor: typeof cursor === "string" ? cursor : null };
  }
  /**
   * How many conversations each inbox filter holds in `status` (default open), and per status.
   * For live badges, ask again when the inbox's subscription delivers a change (docs/api.md).
   */
  async getConversationCounts(status = "open") {
    const data = await this.api("GET", `/api/conversations/counts?${new URLSearchParams({ status })}`);
    return data;
  }
  /** How many messages from the other side this user has not read, in all conversations. */
  async getUnreadCount(userId, customerId) {
    void userId;
    void customerId;
    const data = await this.api("GET", "/api/unread");
    return isObject4(data) && typeof data["total"] === "number" ? data["total"] : 0;
  }
  /** Who the token is: read from a JWT, asked of the server for an opaque portal token. */
  async getIdentity() {
    const known = identityOfToken(this.token);
    if (known !== null && (known.userId !== void 0 || known.customerId !== void 0)) return known;
    this.identity ?? (this.identity = this.api("GET", "/api/me").then((data) => {
      const me = isObject4(data) ? data : {};
      const identity2 = { kind: me["kind"] === "staff" ? "staff" : "customer" };
      if (typeof me["userId"] === "string") identity2.userId = me["userId"];
      if (typeof me["customerId"] === "string") identity2.customerId = me["customerId"];
      return identity2;
    }));
    const identity = this.identity;
    identity.catch(() => {
      if (this.identity === identity) this.identity = null;
    });
    return identity;
  }
  /** The conversation's presence as the live `presence:<id>` subscription knows it. */
  getPresence(conversationId) {
    return this.topics.get(`presence:${conversationId}`)?.presence?.list() ?? [];
  }
  /** Whether that staff user or customer is online in the conversation (needs subscribeToPresence). */
  isOnline(conversationId, userOrCustomerId) {
    return this.topics.get(`presence:${conversationId}`)?.presence?.isOnline(userOrCustomerId) ?? false;
  }
  async presenceSnapshot(conversationId) {
    if (this.me?.kind === "customer") return null;
    const data = await this.api("GET", `/api/conversations/${enc(conversationId)}/presence`);
    const participants = isObject4(data) && Array.isArray(data["participants"]) ? data["participants"] : [];
    return participants.map(presenceFromApi);
  }
  // -- lifecycle ---------------------------------------------------------------------------
  /** Use a new token for HTTP calls, every joined channel and later joins; rejoin ended ones. */
  async setAuth(token) {
    this.ensureOpen();
    this.token = token;
    this.me = identityOfToken(token);
    this.identity = null;
    if (this.realtime === null) return;
    await this.realtime.setAuth(token);
    await Promise.all(
      [...this.topics.values()].filter((topic) => topic.isEnded).map((topic) => topic.reopen())
    );
  }
  /** Leave everything, send the last acknowledgements, close the socket; final. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    await this.unsubscribeAll();
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.flushing !== null) await this.flushing;
    await this.flushAcks();
    for (const settle of [...this.pending.values()]) settle(new RealtimeError("this manager is closed"));
    const client = this.realtime;
    this.realtime = null;
    if (client !== null) await closeClient(client);
  }
  ensureOpen() {
    if (this.closed) throw new RealtimeError("this manager is closed");
  }
  report(error) {
    const onError = this.options.onError;
    if (onError === void 0) {
      console.warn("realtime-messaging:", error);
      return;
    }
    try {
      onError(error);
    } catch (failure) {
      console.warn("realtime-messaging: onError failed:", failure);
    }
  }
  // -- delivery acknowledgements -----------------------------------------------------------
  /**
   * Acknowledge what reached this client: the `sent` delivery rows addressed to this user.
   * By row, not by message, so nothing is sent for messages the server does not track for
   * this user (a staff user seeing a conversation assigned to someone else).
   */
  observe(item) {
    if (this.options.autoAckDelivery === false || item.kind !== "deliveryStatus") return;
    const event = item.event;
    if (event.status !== "sent" || event.change === "DELETE") return;
    const me = this.me;
    if (me === null || event.recipientType !== me.kind) return;
    const myId = me.kind === "staff" ? me.userId : me.customerId;
    if (myId !== void 0 && event.recipientId !== myId) return;
    if (this.acked.has(event.messageId)) return;
    this.acked.add(event.messageId);
    if (this.acked.size > ACKED_MEMORY) {
      const oldest = this.acked.values().next();
      if (!oldest.done) this.acked.delete(oldest.value);
    }
    this.toAck.push(event.messageId);
    if (this.ackTimer === null && this.flushing === null) this.scheduleAcks(50);
  }
  scheduleAcks(delayMs) {
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.flushing = this.flushAcks().then((done) => {
        this.flushing = null;
        if (done) {
          this.ackDelayMs = 500;
          if (this.toAck.length > 0 && !this.closed) this.scheduleAcks(50);
        } else if (!this.closed) {
          this.scheduleAcks(this.ackDelayMs);
          this.ackDelayMs = Math.min(this.ackDelayMs * 2, 1e4);
        }
      });
    }, delayMs);
  }
  /** Send what is queued; false when the server could not be reached (kept queued). */
  async flushAcks() {
    while (this.toAck.length > 0) {
      const batch = this.toAck.slice(0, MAX_BATCH);
      this.toAck = this.toAck.slice(MAX_BATCH);
      try {
        await this.http.request("POST", "/api/messages/delivered", { messageIds: batch });
      } catch (error) {
        if (error instanceof ApiError && error.status !== 0 && error.status < 500) {
          this.report(error);
          continue;
        }
        this.toAck = [...batch, ...this.toAck];
        return false;
      }
    }
    return true;
  }
};
async function closeClient(client) {
  const internals = client;
  const socket = internals.socketAdapter?.getSocket?.();
  if (typeof internals._cancelPendingDisconnect !== "function" || socket === void 0) {
    await client.disconnect();
    return;
  }
  internals._cancelPendingDisconnect();
  await new Promise((resolve) => socket.disconnect(resolve));
}
function enc(id) {
  return encodeURIComponent(id);
}
function idsOf(data) {
  const ids = isObject4(data) ? data["messageIds"] : void 0;
  return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
}
function asError(error) {
  return error instanceof Error ? error : new RealtimeError(String(error));
}
var shared = null;
function configureRealtimeManager(url, anonKey, options = {}) {
  const previous = shared;
  shared = new RealtimeMessagingManager(url, anonKey, options);
  if (previous !== null) void previous.close().catch(() => {
  });
  return shared;
}
function globalConfig() {
  const scope = globalThis;
  const config = scope.RTM_CONFIG;
  if (isObject4(config) && typeof config["url"] === "string" && typeof config["anonKey"] === "string") {
    const token = config["accessToken"];
    const accessToken = typeof token === "string" ? token : null;
    return { url: config["url"], anonKey: config["anonKey"], accessToken };
  }
  const env = scope.process?.env;
  if (env?.["RTM_URL"] && env["RTM_ANON_KEY"]) {
    return { url: env["RTM_URL"], anonKey: env["RTM_ANON_KEY"], accessToken: env["RTM_ACCESS_TOKEN"] || null };
  }
  return null;
}
function getRealtimeManager() {
  if (shared !== null) return shared;
  const config = globalConfig();
  if (config === null) {
    throw new RealtimeError(
      "no realtime manager configured: call configureRealtimeManager(url, anonKey, { accessToken }) or set globalThis.RTM_CONFIG = { url, anonKey, accessToken }"
    );
  }
  const accessToken = config.accessToken ?? null;
  shared = new RealtimeMessagingManager(config.url, config.anonKey, { accessToken });
  return shared;
}

// src/typing.ts
var RateBudget = class {
  constructor(limit, windowMs) {
    this.limit = limit;
    this.windowMs = windowMs;
    this.uses = [];
    if (limit < 1 || windowMs <= 0) throw new RangeError("a rate budget needs a positive limit and window");
  }
  used(now) {
    while (this.uses.length > 0 && (this.uses[0] ?? 0) + this.windowMs <= now) this.uses.shift();
    return this.uses.length;
  }
  allows(now, cost = 1, reserve = 0) {
    return this.limit - reserve - this.used(now) >= cost;
  }
  /** When `allows` becomes true (Infinity if `cost + reserve` exceeds the limit). */
  freeAt(now, cost = 1, reserve = 0) {
    const expiring = this.used(now) + cost + reserve - this.limit;
    if (expiring <= 0) return now;
    if (cost + reserve > this.limit) return Infinity;
    return (this.uses[expiring - 1] ?? now) + this.windowMs;
  }
  record(at, cost = 1) {
    for (let i = 0; i < cost; i++) this.uses.push(at);
  }
};
var TypingHelper = class {
  constructor(manager, conversationId, options = {}) {
    this.manager = manager;
    this.conversationId = conversationId;
    this.options = options;
    this.lastKey = null;
    /** Until when the server may show us typing (null: it does not). */
    this.liveUntil = null;
    this.nextStartAt = -Infinity;
    this.closing = false;
    this.running = null;
    this.timer = null;
    this.idleAfterMs = options.idleAfterMs ?? 3e3;
    this.refreshEveryMs = options.refreshEveryMs ?? 4e3;
    this.expiresAfterMs = options.expiresAfterMs ?? 5e3;
    const limit = options.rateLimit ?? 10;
    if (limit < 2) throw new RangeError("rateLimit must allow a start and a stop");
    this.budget = new RateBudget(limit, options.rateWindowMs ?? 6e4);
  }
  /** Whether the server may be showing the indicator, as far as this helper knows. */
  get isTyping() {
    return this.liveUntil !== null && Date.now() < this.liveUntil;
  }
  /** The user typed: cheap enough for every key. */
  keystroke() {
    if (this.closing) return;
    this.lastKey = Date.now();
    this.kick();
  }
  /** The user stopped typing (the input lost focus, the message was sent): stop now. */
  stop() {
    this.lastKey = null;
    if (this.liveUntil !== null) this.kick();
  }
  /** Stop the indicator if it is showing, and take no more keystrokes. */
  async close() {
    this.closing = true;
    this.kick();
    await this.running;
  }
  kick() {
    if (this.running !== null) return;
    this.running = this.work().finally(() => {
      this.running = null;
    });
  }
  async work() {
    for (; ; ) {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      const now = Date.now();
      const [action, wakeAt] = this.plan(now);
      if (action !== null) {
        await action();
        continue;
      }
      if (wakeAt !== null) this.timer = setTimeout(() => this.kick(), Math.max(0, wakeAt - now));
      return;
    }
  }
  /** What to send now, or when to look again (null: never). */
  plan(now) {
    const live = this.liveUntil !== null && now < this.liveUntil;
    if (!live) this.liveUntil = null;
    const keyAt = this.lastKey;
    if (!this.closing && keyAt !== null && now < keyAt + this.idleAfterMs) {
      let due = this.nextStartAt;
      if (now >= due) {
        if (this.budget.allows(now, 1, 1)) return [() => this.start(), null];
        due = this.budget.freeAt(now, 1, 1);
      }
      return [null, Math.min(due, keyAt + this.idleAfterMs)];
    }
    this.lastKey = null;
    if (live && this.budget.allows(now)) return [() => this.send(false), null];
    this.liveUntil = null;
    return [null, null];
  }
  async start() {
    this.nextStartAt = Date.now() + this.refreshEveryMs;
    try {
      await this.manager.sendTypingIndicator(this.conversationId, null, null, true);
      this.liveUntil = Date.now() + this.expiresAfterMs;
    } catch (error) {
      if (!(error instanceof ApiError && error.status !== 0)) {
        this.liveUntil = Date.now() + this.expiresAfterMs;
      }
      this.report(error);
    } finally {
      this.budget.record(Date.now());
    }
  }
  async send(isTyping) {
    this.liveUntil = null;
    this.nextStartAt = -Infinity;
    try {
      await this.manager.sendTypingIndicator(this.conversationId, null, null, isTyping);
    } catch (error) {
      this.report(error);
    } finally {
      this.budget.record(Date.now());
    }
  }
  report(error) {
    const failure = error instanceof Error ? error : new RealtimeError(String(error));
    if (this.options.onError) this.options.onError(failure);
    else console.warn("realtime-messaging: typing:", failure);
  }
};
export {
  ApiError,
  ChannelClosedError,
  ChannelError,
  ConnectionLostError,
  HistoryLostError,
  JoinRefusedError,
  PRESENCE_OF_MOST,
  RateBudget,
  RealtimeError,
  RealtimeMessagingManager,
  Subscription,
  TypingHelper,
  configureRealtimeManager,
  eventFromChange,
  getRealtimeManager,
  identityOfToken,
  messageFromApi,
  parseTimestamp,
  presenceFromApi,
  reconnectDelay,
  socketUrl
};
