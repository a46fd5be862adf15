"""Portal pages for people: operators, partner staff, members."""
