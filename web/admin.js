// The admin dashboard's script (admin.html): its code is in js/ (admin.js wires it together).
// This file stays at /static/admin.js, the address the page has always loaded.
import { startAdmin } from './js/admin.js';

startAdmin();
