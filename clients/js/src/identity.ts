/**
 * Who an access token speaks for, read from the token itself where it says so (JWT claims are
 * not secret; the server verifies them, the client only needs to know whose rows are whose).
 */

export interface Identity {
  kind: 'staff' | 'customer'
  userId?: string
  customerId?: string
}

function base64UrlDecode(part: string): string {
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/')
  const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4)
  const binary = atob(padded)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return new TextDecoder().decode(bytes)
}

/**
 * The identity a token names, null when it names none this client can tell (the anon or
 * service key, a malformed token). A portal token (`pt_…`) is opaque: a customer whose id only
 * the server knows (`GET /api/me`).
 */
export function identityOfToken(token: string | null | undefined): Identity | null {
  if (!token) return null
  if (token.startsWith('pt_')) return { kind: 'customer' }
  const payload = token.split('.')[1]
  if (payload === undefined) return null
  let claims: unknown
  try {
    claims = JSON.parse(base64UrlDecode(payload))
  } catch {
    return null
  }
  if (typeof claims !== 'object' || claims === null) return null
  const { customer_id: customerId, role, sub } = claims as Record<string, unknown>
  if (typeof customerId === 'string' && customerId) return { kind: 'customer', customerId }
  if (role === 'authenticated' && typeof sub === 'string' && sub) {
    return { kind: 'staff', userId: sub }
  }
  return null
}
