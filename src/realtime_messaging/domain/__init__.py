"""Pure domain rules: identities, topic authorization, typing, presence and delivery policy."""
