"""Keys, tokens, encryption, AMP CORS, API keys and webhook signatures."""
