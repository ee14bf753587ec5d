// The wallet page: save a card with Stripe.js (confirmCardSetup), then buy credit or subscribe with it.
// The card goes from this page to Stripe only; our server sees the PaymentMethod ID it created.
// Texts come from data-* attributes on #wallet (rendered in the reader's language).
const root = document.getElementById('wallet');
const cardBox = document.getElementById('card');

if (root && cardBox && typeof window.Stripe === 'function') {
  const t = root.dataset;
  const stripe = window.Stripe(t.key);
  const card = stripe.elements().create('card');
  card.mount('#card');
  const status = document.getElementById('wallet-status');
  const buttons = () => root.querySelectorAll('button[type=submit]');

  const say = (text, bad = false) => {
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle('error', bad);
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

  async function run(work) {
    buttons().forEach((b) => { b.disabled = true; });
    say(t.working);
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
    run(async () => {
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
      run(async () => {
        const paymentMethod = await savedCard();
        const res = await post('/wallet/subscribe', { tier: form.dataset.tier, paymentMethod });
        if (res.status === 'incomplete' && res.clientSecret) await authenticate(res.clientSecret);
        say(t.subscribed);
        window.location.assign('/wallet?subscribed=1');
      });
    });
  });
}
