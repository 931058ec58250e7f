import { useEffect, useMemo, useRef } from 'preact/hooks';
import { useConversation } from '../conversation.ts';
import type { Session } from '../sessionTypes.ts';
import { TypingSender } from '../typingSender.ts';
import type { Conversation } from '../types.ts';
import { Composer } from './Composer.tsx';
import { BackIcon } from './Icons.tsx';
import { MessageList } from './MessageList.tsx';
import { PresenceBadge, type PresenceInfo } from './Presence.tsx';

interface Props {
  session: Session;
  conversation: Conversation;
  title: string;
  subtitle: string | null;
  /** "Customer" / "Agent". */
  otherLabel: string;
  presence: PresenceInfo | null;
  presenceText: string;
  onBack(): void;
  /** Where the focus goes when the conversation opens: the composer (wide screens), the heading, or nowhere (opened by itself). */
  focusTarget: 'composer' | 'heading' | null;
  /** A message to bring into view (a search result). */
  highlightId?: string | null;
}

export function ConversationView(props: Props) {
  const { session, conversation, otherLabel } = props;
  const { manager, me, side } = session;
  const model = useConversation(session, conversation, otherLabel);
  const heading = useRef<HTMLHeadingElement>(null);

  const typingSender = useMemo(
    () =>
      new TypingSender(
        manager,
        conversation.id,
        side === 'staff' ? (me.userId ?? undefined) : undefined,
        side === 'customer' ? (me.customerId ?? undefined) : undefined,
      ),
    [manager, conversation.id, side, me.userId, me.customerId],
  );
  useEffect(() => () => typingSender.stop(), [typingSender]);

  useEffect(() => {
    if (props.focusTarget === 'heading') heading.current?.focus();
  }, [conversation.id]);

  const typingText =
    model.typing.length === 0
      ? ''
      : side === 'staff'
        ? 'Customer is typing…'
        : model.typing.length > 1
          ? 'Agents are typing…'
          : 'Agent is typing…';

  return (
    <section class="conversation" aria-labelledby={`conversation-title-${conversation.id}`}>
      <header class="conversation-head">
        <button type="button" class="btn btn-quiet back" onClick={props.onBack}>
          <BackIcon />
          <span>Conversations</span>
        </button>
        <div class="conversation-title">
          <h2 id={`conversation-title-${conversation.id}`} ref={heading} tabIndex={-1}>
            {props.title}
          </h2>
          <p class="conversation-sub">
            <PresenceBadge presence={props.presence} text={props.presenceText} />
            {props.subtitle && <span class="muted"> · {props.subtitle}</span>}
          </p>
        </div>
      </header>
      {model.error && (
        <div class="notice notice-error" role="alert">
          {model.error}{' '}
          <button type="button" class="link-button" onClick={model.reload}>
            Try again
          </button>
        </div>
      )}
      <MessageList
        resetKey={conversation.id}
        messages={model.messages}
        side={side}
        myId={side === 'staff' ? me.userId : me.customerId}
        otherLabel={otherLabel}
        loading={model.loading}
        hasOlder={model.nextCursor !== null}
        loadingOlder={model.loadingOlder}
        onLoadOlder={model.loadOlder}
        needsRead={model.needsRead}
        onSeen={(id) => session.reads.add(id)}
        onRetry={model.retry}
        manager={manager}
        onExpired={session.expired}
        onEdit={model.edit}
        onDelete={model.remove}
        highlightId={props.highlightId ?? null}
      />
      <div class="typing" aria-live="polite" aria-atomic="true">
        {typingText && (
          <>
            <span class="typing-dots" aria-hidden="true">
              <span />
              <span />
              <span />
            </span>
            <span>{typingText}</span>
          </>
        )}
      </div>
      <Composer
          conversationId={conversation.id}
          manager={manager}
          onExpired={session.expired}
          label={side === 'staff' ? 'Message to the customer' : 'Message to support'}
          autoFocus={props.focusTarget === 'composer'}
          onKeystroke={() => typingSender.keystroke()}
          onStopTyping={() => typingSender.stop()}
          onSend={(content, files) => {
            typingSender.sent();
            model.send(content, files);
          }}
        />
    </section>
  );
}
