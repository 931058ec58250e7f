/** The staff inbox, served at `/`. */
import { start } from './boot.tsx';

start({ side: 'staff', storageKey: 'rtm.inbox.token' });
