/**
 * The sign-in token: from a `#token=…` link (then removed from the address bar, so it is not
 * left in the history or shared by copying the address), else from sessionStorage, so a reload
 * stays signed in while closing the tab signs out.
 */

export function takeTokenFromFragment(): string | null {
  const hash = window.location.hash.replace(/^#/, '');
  if (!hash) return null;
  const params = new URLSearchParams(hash);
  const token = params.get('token');
  if (token === null) return null;
  params.delete('token');
  const rest = params.toString();
  const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : '');
  window.history.replaceState(window.history.state, '', url);
  const trimmed = token.trim();
  return trimmed === '' ? null : trimmed;
}

export class TokenStore {
  constructor(private readonly key: string) {}

  get(): string | null {
    try {
      return window.sessionStorage.getItem(this.key);
    } catch {
      return null; // storage disabled: the page still works, a reload signs out
    }
  }

  set(token: string): void {
    try {
      window.sessionStorage.setItem(this.key, token);
    } catch {
      // storage disabled or full
    }
  }

  clear(): void {
    try {
      window.sessionStorage.removeItem(this.key);
    } catch {
      // storage disabled
    }
  }
}
