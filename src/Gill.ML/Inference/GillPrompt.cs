using Gill.ML.Generation;
using Microsoft.ML.Data;
using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Inference;

/// <summary>One part of an interleaved prompt: text or an image.</summary>
public abstract record GillPromptPart;

/// <summary>A text part (tokenized with the model's tokenizer; BOS only on the first text part unless asked).</summary>
/// <param name="Text">The text.</param>
public sealed record GillTextInput(string Text) : GillPromptPart;

/// <summary>
/// An image part: a file path, an ML.NET <see cref="MLImage"/> or a float RGB tensor [3,H,W] in [0,1]. It becomes k
/// visual tokens at its position. <see cref="GalleryId"/> names the image in the retrieval gallery (so it is never
/// retrieved back); for a path it defaults to the path itself.
/// </summary>
public sealed record GillImageInput : GillPromptPart
{
    private GillImageInput() { }

    /// <summary>The file path, when given as one.</summary>
    public string? Path { get; private init; }

    /// <summary>The ML.NET image, when given as one.</summary>
    public MLImage? MLImage { get; private init; }

    /// <summary>The RGB tensor [3,H,W] in [0,1], when given as one (not owned).</summary>
    public Tensor? Tensor { get; private init; }

    /// <summary>The encoded image bytes (PNG, JPEG, …), when given as such.</summary>
    public ReadOnlyMemory<byte>? EncodedBytes { get; private init; }

    /// <summary>Id of this image in the retrieval gallery, if it is one of its images.</summary>
    public string? GalleryId { get; init; }

    /// <summary>An image file (PNG, JPEG, …).</summary>
    public static GillImageInput FromFile(string path) => new() { Path = path ?? throw new ArgumentNullException(nameof(path)) };

    /// <summary>An ML.NET image.</summary>
    public static GillImageInput FromMLImage(MLImage image) => new() { MLImage = image ?? throw new ArgumentNullException(nameof(image)) };

    /// <summary>Encoded image bytes (PNG, JPEG, …); decoded when the prompt is encoded.</summary>
    public static GillImageInput FromEncodedBytes(ReadOnlyMemory<byte> bytes) => new() { EncodedBytes = bytes };

    /// <summary>A float RGB tensor [3,H,W] in [0,1].</summary>
    public static GillImageInput FromTensor(Tensor image) => new() { Tensor = image ?? throw new ArgumentNullException(nameof(image)) };

    /// <summary>Short description for messages.</summary>
    public string Describe() => Path is not null ? $"image file '{Path}'" : MLImage is not null ? "MLImage" : EncodedBytes is not null ? "encoded image" : "image tensor";

    internal SKBitmap Decode()
    {
        if (Path is not null) return GillImages.DecodeFile(Path);
        if (EncodedBytes is { } bytes) return GillImages.DecodeBytes(bytes);
        if (MLImage is not null)
        {
            using var t = ImageTensorIO.FromMLImage(MLImage);
            return GillImages.FromTensor(t, "MLImage");
        }
        return GillImages.FromTensor(Tensor!, "image tensor");
    }
}

/// <summary>An interleaved prompt: a sequence of text and image parts, in order.</summary>
public sealed partial class GillPrompt
{
    /// <summary>Creates a prompt from parts.</summary>
    public GillPrompt(IEnumerable<GillPromptPart> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        Parts = parts.ToList();
        if (Parts.Any(p => p is null)) throw new ArgumentException("A prompt part is null.", nameof(parts));
    }

    /// <summary>The parts.</summary>
    public IReadOnlyList<GillPromptPart> Parts { get; }

    /// <summary>
    /// Builds a prompt from strings (text), <see cref="MLImage"/>s, tensors [3,H,W] and <see cref="GillPromptPart"/>s. Use
    /// <see cref="GillImageInput.FromFile"/> for image files (a plain string is text).
    /// </summary>
    public static GillPrompt Of(params object[] parts) => new(parts.Select(p => p switch
    {
        string s => new GillTextInput(s),
        GillPromptPart part => part,
        MLImage img => GillImageInput.FromMLImage(img),
        Tensor t => (GillPromptPart)GillImageInput.FromTensor(t),
        null => throw new ArgumentNullException(nameof(parts), "A prompt part is null."),
        _ => throw new ArgumentException($"Unsupported prompt part type {p.GetType().Name}: use string, MLImage, Tensor or GillPromptPart.", nameof(parts)),
    }));

    /// <summary>A captioning prompt: the image, then an optional lead-in text.</summary>
    public static GillPrompt Caption(GillImageInput image, string leadIn = "") =>
        leadIn.Length == 0 ? new GillPrompt(new GillPromptPart[] { image }) : new GillPrompt(new GillPromptPart[] { image, new GillTextInput(leadIn) });

    /// <summary>A question-answering prompt in GILL's dialogue format: optional image, then <c>"Q: {question}\nA:"</c>.</summary>
    public static GillPrompt Question(string question, GillImageInput? image = null)
    {
        var parts = new List<GillPromptPart>();
        if (image is not null) parts.Add(image);
        parts.Add(new GillTextInput($"Q: {question}\nA:"));
        return new GillPrompt(parts);
    }
}

/// <summary>Image conversions used by inference.</summary>
internal static class GillImages
{
    /// <summary>Decodes an image file into a bitmap, with a clear error for a missing or undecodable file.</summary>
    public static SKBitmap DecodeFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Image file '{path}' does not exist.", path);
        SKBitmap? bmp;
        try
        {
            bmp = SKBitmap.Decode(path);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"Image file '{path}' cannot be decoded: {e.Message}", e);
        }
        return bmp ?? throw new InvalidDataException($"Image file '{path}' cannot be decoded (not a supported image format).");
    }

    /// <summary>Decodes encoded image bytes, with a clear error when they are not an image.</summary>
    public static SKBitmap DecodeBytes(ReadOnlyMemory<byte> bytes)
    {
        SKBitmap? bmp = null;
        try
        {
            if (bytes.Length > 0) bmp = SKBitmap.Decode(bytes.ToArray());
        }
        catch (ArgumentException)
        {
            bmp = null;
        }
        return bmp ?? throw new InvalidDataException($"Encoded image bytes ({bytes.Length} bytes) cannot be decoded (not a supported image format).");
    }

    /// <summary>A float RGB tensor [3,H,W] (or [1,3,H,W]) in [0,1] as an RGBA bitmap.</summary>
    public static SKBitmap FromTensor(Tensor image, string what)
    {
        if (image.dim() == 4 && image.shape[0] == 1) image = image[0];
        if (image.dim() != 3 || image.shape[0] != 3 || image.shape[1] <= 0 || image.shape[2] <= 0)
            throw new ArgumentException($"The {what} must be [3, H, W] RGB in [0, 1], got {Serialization.SafeTensors.FormatShape(image.shape)}.");
        var png = ImageTensorIO.ToPngBytes(image);
        return SKBitmap.Decode(png) ?? throw new InvalidDataException($"The {what} could not be converted to a bitmap.");
    }
}
