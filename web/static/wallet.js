// The wallet page: save a card with Stripe.js (confirmCardSetup), then buy credit or subscribe with it.
// The card goes from this page to Stripe only; our server sees the PaymentMethod ID it created.
// Texts come from data-* attributes on #wallet (rendered in the reader's language).
//
// The card Element says, through its 'change' events, whether anything was typed: without a card,
// pressing Buy or Subscribe says "Enter your card first." instead of asking Stripe. The status
// (#wallet-status) moves under the form whose button was pressed, so it is on screen on a phone.
// localstripe's stand-in for Stripe.js (the tests, the demo) puts plain inputs under #card and sends
// the number as typed: its spaces ("4242 4242 4242 4242", as printed) are dropped as they are typed.
// Real Stripe's Element (an iframe) does that itself and is left alone.
const root = document.getElementById('wallet');
const cardBox = document.getElementById('card');

if (root && cardBox && typeof window.Stripe === 'function') {
  const t = root.dataset;
  const stripe = window.Stripe(t.key);
  const card = stripe.elements().create('card');
  card.mount('#card');
  const status = document.getElementById('wallet-status');
  const buttons = () => root.querySelectorAll('button[type=submit]');

  // Whether a card was typed: real Stripe's change events say `empty`; localstripe's carry nothing,
  // its inputs say it.
  const standIn = () => cardBox.querySelector('input') !== null;
  let entered = false;
  card.on('change', (event) => {
    entered = typeof event?.empty === 'boolean' ? !event.empty
      : [...cardBox.querySelectorAll('input')].some((input) => input.value.trim() !== '');
  });
  // localstripe's number input: digits only, before its own input handler reads it (capture phase).
  const compact = (number) => number.replace(/[\s-]+/g, '');
  cardBox.addEventListener('input', (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || input.getAttribute('placeholder') !== 'number') return;
    const digits = compact(input.value);
    if (digits !== input.value) input.value = digits;
  }, true);

  const say = (text, bad = false) => {
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle('error', bad);
  };
  /** The status under `form` (the one whose button was pressed), in view. */
  const sayUnder = (form, text, bad = false) => {
    if (form.nextElementSibling !== status) form.after(status);
    say(text, bad);
    status.scrollIntoView({ block: 'nearest' });
  };

  async function post(path, fields) {
    const body = new URLSearchParams({ csrf_token: t.csrf, ...fields });
    const resp = await fetch(path, { method: 'POST', body, credentials: 'same-origin' });
    let data = {};
    try { data = await resp.json(); } catch { /* not JSON: the status says enough */ }
    if (!resp.ok) throw new Error(data.message || `${resp.status} ${resp.statusText}`);
    return data;
  }

  // A PaymentMethod ID for the card typed into the page, saved through a SetupIntent.
  async function savedCard() {
    const { clientSecret } = await post('/wallet/card', {});
    if (standIn() && typeof card.value?.card?.number === 'string') {
      card.value.card.number = compact(card.value.card.number);  // e.g. filled in without an input event
    }
    const result = await stripe.confirmCardSetup(clientSecret, { payment_method: { card } });
    if (result.error) throw new Error(result.error.message || String(result.error));
    return result.setupIntent.payment_method;
  }

  // 3-D Secure, when the bank asks for it.
  async function authenticate(clientSecret) {
    const result = await stripe.confirmCardPayment(clientSecret);
    if (result.error) throw new Error(result.error.message || String(result.error));
  }

  async function balance() {
    const resp = await fetch('/wallet/balance', { credentials: 'same-origin' });
    return resp.ok ? (await resp.json()).credit : null;
  }

  /** Do `work` for `form`'s button, its status under it; without a card, ask for one. */
  async function run(form, work) {
    if (!entered) {
      sayUnder(form, t.nocard, true);
      if (standIn()) cardBox.querySelector('input')?.focus({ preventScroll: true });
      else card.focus?.();
      return;
    }
    buttons().forEach((b) => { b.disabled = true; });
    sayUnder(form, t.working);
    try {
      await work();
    } catch (err) {
      say(`${t.failed} ${err.message}`, true);
    } finally {
      buttons().forEach((b) => { b.disabled = false; });
    }
  }

  document.getElementById('buy-credit')?.addEventListener('submit', (event) => {
    event.preventDefault();
    const amount = new FormData(event.target).get('amount');
    run(event.target, async () => {
      const before = Number(document.getElementById('credit')?.dataset.minor ?? 0);
      const paymentMethod = await savedCard();
      const res = await post('/wallet/credit', { amount, paymentMethod });
      if (res.status === 'requires_action') await authenticate(res.clientSecret);
      for (let i = 0; i < 30; i += 1) { // the ledger follows Stripe; usually at once
        const credit = await balance();
        if (credit !== null && credit >= before + Number(amount)) {
          say(t.paid);
          window.location.assign('/wallet?paid=1');
          return;
        }
        await new Promise((done) => { setTimeout(done, 500); });
      }
      say(t.pending);
    });
  });

  root.querySelectorAll('form.subscribe').forEach((form) => {
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      run(form, async () => {
        const paymentMethod = await savedCard();
        const res = await post('/wallet/subscribe', { tier: form.dataset.tier, paymentMethod });
        if (res.status === 'incomplete' && res.clientSecret) await authenticate(res.clientSecret);
        say(t.subscribed);
        window.location.assign('/wallet?subscribed=1');
      });
    });
  });
}
