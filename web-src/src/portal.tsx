/** The customer chat, served at `/portal`. */
import { start } from './boot.tsx';

start({ side: 'customer', storageKey: 'rtm.portal.token' });
