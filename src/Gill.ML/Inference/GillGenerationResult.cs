using Gill.ML.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Inference;

/// <summary>One part of a generated answer.</summary>
public abstract partial record GillOutputPart;

/// <summary>Generated text.</summary>
public sealed record GillTextOutput(string Text) : GillOutputPart;

/// <summary>An image retrieved from the gallery for an [IMG] group.</summary>
/// <param name="GroupIndex">Which [IMG] group of the output.</param>
/// <param name="GalleryIndex">Row in the gallery.</param>
/// <param name="Id">Id (path) stored in the gallery.</param>
/// <param name="Score">Cosine similarity.</param>
/// <param name="Rank">0 for the best match.</param>
public sealed record GillRetrievedImageOutput(int GroupIndex, long GalleryIndex, string Id, float Score, int Rank) : GillOutputPart;

/// <summary>An image generated for an [IMG] group: float RGB [3,H,W] in [0,1] (owned by the result).</summary>
public sealed record GillGeneratedImageOutput(int GroupIndex, long? Seed, Tensor Image) : GillOutputPart
{
    /// <summary>PNG bytes of the image.</summary>
    public byte[] ToPng() => ImageTensorIO.ToPngBytes(Image);

    /// <summary>Writes the image as PNG (atomically).</summary>
    public void SavePng(string path) => ImageTensorIO.SavePng(Image, path);
}

/// <summary>Retrieve or generate.</summary>
public enum GillImageDecision
{
    /// <summary>Show an image from the gallery.</summary>
    Retrieve,

    /// <summary>Generate a new image.</summary>
    Generate,
}

/// <summary>Where a decision came from.</summary>
public enum GillDecisionSource
{
    /// <summary>The trained decision classifier.</summary>
    Classifier,

    /// <summary>The threshold on the maximum retrieval score.</summary>
    Threshold,

    /// <summary>An always-retrieve / always-generate mode, or a missing gallery/generator.</summary>
    Fixed,
}

/// <summary>One [IMG] group of the output with its decision.</summary>
/// <param name="GroupIndex">0-based group index.</param>
/// <param name="TokenPosition">Position of [IMG0] among the generated tokens.</param>
/// <param name="Decision">Retrieve or generate.</param>
/// <param name="RetrieveProbability">P(retrieve) from the classifier; 1/0 for threshold and fixed decisions.</param>
/// <param name="GenerateProbability">1 − <paramref name="RetrieveProbability"/>.</param>
/// <param name="MaxRetrievalScore">Best cosine score in the gallery (null without a gallery).</param>
/// <param name="Source">What made the decision.</param>
/// <param name="ImgHiddenStates">The r [IMG] hidden states, row-major [r, D].</param>
/// <param name="RetrievalEmbedding">The normalised text-side retrieval embedding [p].</param>
public sealed record GillImageGroup(int GroupIndex, int TokenPosition, GillImageDecision Decision, double RetrieveProbability,
    double GenerateProbability, double? MaxRetrievalScore, GillDecisionSource Source, float[] ImgHiddenStates, float[] RetrievalEmbedding);

/// <summary>Wall-clock time spent in each stage.</summary>
public sealed record GillTimings(TimeSpan VisualEncoding, TimeSpan LanguageModel, TimeSpan Retrieval, TimeSpan Generation, TimeSpan Total);

/// <summary>The output of one prompt.</summary>
public sealed partial class GillGenerationResult : IDisposable
{
    internal GillGenerationResult(IReadOnlyList<GillOutputPart> parts, IReadOnlyList<GillImageGroup> groups, IReadOnlyList<int> tokenIds,
        int promptLength, GillTimings timings, int generatorCalls)
    {
        Parts = parts;
        ImageGroups = groups;
        TokenIds = tokenIds;
        PromptLength = promptLength;
        Timings = timings;
        GeneratorCalls = generatorCalls;
    }

    /// <summary>Interleaved output: text, retrieved images (best first) and generated images.</summary>
    public IReadOnlyList<GillOutputPart> Parts { get; }

    /// <summary>Every [IMG] group with its decision and probabilities.</summary>
    public IReadOnlyList<GillImageGroup> ImageGroups { get; }

    /// <summary>All generated token ids (sampled and forced), stop tokens included.</summary>
    public IReadOnlyList<int> TokenIds { get; }

    /// <summary>Positions the prompt occupied (text tokens + visual tokens, after any context examples/truncation).</summary>
    public int PromptLength { get; }

    /// <summary>Stage timings (for a batch: the batch's LM time, this row's retrieval and generation).</summary>
    public GillTimings Timings { get; }

    /// <summary>Number of image-generator calls made for this output.</summary>
    public int GeneratorCalls { get; }

    /// <summary>All text parts joined.</summary>
    public string Text => string.Concat(Parts.OfType<GillTextOutput>().Select(t => t.Text));

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var g in Parts.OfType<GillGeneratedImageOutput>()) g.Image.Dispose();
    }
}
