import { initAll } from '/ui/govuk/govuk-frontend.min.js'
initAll()
