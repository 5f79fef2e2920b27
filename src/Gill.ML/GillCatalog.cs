using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace Gill.ML;

/// <summary>
/// The root of Gill.ML's ML.NET surface: <c>mlContext.Gill()</c>. It keeps the <see cref="MLContext"/>, which gives
/// every stage the environment's seed, log and device settings through public APIs.
/// </summary>
public sealed partial class GillCatalog
{
    internal GillCatalog(MLContext context)
    {
        Context = context ?? throw new ArgumentNullException(nameof(context));
    }

    /// <summary>The ML.NET context this catalog belongs to.</summary>
    public MLContext Context { get; }

    /// <summary>The context as an ML.NET host environment (for channels and seeded random sources).</summary>
    internal IHostEnvironment Environment => Context;
}

/// <summary>Entry point: <c>mlContext.Gill()</c>.</summary>
public static class MLContextGillExtensions
{
    /// <summary>Returns the Gill.ML catalog of stages, trainers, model save/load and evaluators.</summary>
    public static GillCatalog Gill(this MLContext mlContext) => new(mlContext);
}
