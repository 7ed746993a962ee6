"""Provider clients behind one interface (base.Provider); each SDK lives in its own module."""
