// The web client's script (index.html): its code is in js/ (main.js wires it together).
// This file stays at /static/app.js, the address the page has always loaded.
import { startApp } from './js/main.js';

startApp();
