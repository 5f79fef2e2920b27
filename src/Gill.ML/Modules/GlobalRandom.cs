using TorchSharp;

namespace Gill.ML.Modules;

/// <summary>
/// libtorch's default generator is one per process. Module constructors draw their default initialisations from it,
/// so two threads that seed it and build modules at the same time would read each other's numbers. Every section of
/// Gill.ML that seeds the default generator and draws from it runs under <see cref="Gate"/>, which keeps concurrent
/// trainings (the world pretrainer's two branches, parallel experiment runs) reproducible.
/// </summary>
internal static class GlobalRandom
{
    /// <summary>Held while the default generator is seeded and drawn from (re-entrant).</summary>
    internal static readonly object Gate = new();

    /// <summary>Seeds the default generator with <paramref name="seed"/> and runs <paramref name="body"/>, both under <see cref="Gate"/>.</summary>
    /// <param name="seed">The seed.</param>
    /// <param name="body">Draws from the default generator (typically: builds modules).</param>
    /// <param name="restore">Puts the generator's previous state back afterwards, so the caller's random stream is untouched.</param>
    public static T Seeded<T>(long seed, Func<T> body, bool restore = false)
    {
        lock (Gate)
        {
            using var saved = restore ? torch.random.get_rng_state() : null;
            torch.random.manual_seed(seed);
            try
            {
                return body();
            }
            finally
            {
                if (saved is not null) torch.random.set_rng_state(saved);
            }
        }
    }

    /// <summary>Runs <paramref name="body"/> under <see cref="Gate"/> with the generator as it is (or seeded, when <paramref name="seed"/> is given).</summary>
    public static T Maybe<T>(long? seed, Func<T> body, bool restore = false)
    {
        if (seed is long s) return Seeded(s, body, restore);
        lock (Gate) return body();
    }
}
