using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Imaging;

/// <summary>Settings of <see cref="ClipImageProcessor"/>, named as in Hugging Face's preprocessor_config.json.</summary>
public sealed record ClipImageProcessorOptions
{
    /// <summary>CLIP's channel means (RGB).</summary>
    public static readonly IReadOnlyList<double> ClipMean = [0.48145466, 0.4578275, 0.40821073];
    /// <summary>CLIP's channel standard deviations (RGB).</summary>
    public static readonly IReadOnlyList<double> ClipStd = [0.26862954, 0.26130258, 0.27577711];

    /// <summary>Resize the shortest side to <see cref="ShortestEdge"/> (<c>do_resize</c>).</summary>
    public bool DoResize { get; init; } = true;
    /// <summary>Target length of the shortest side (<c>size.shortest_edge</c>).</summary>
    public int ShortestEdge { get; init; } = 224;
    /// <summary>Resampling filter (<c>resample</c>, PIL numbering; CLIP uses bicubic).</summary>
    public PilResampleFilter Resample { get; init; } = PilResampleFilter.Bicubic;
    /// <summary>Centre-crop to <see cref="CropHeight"/>×<see cref="CropWidth"/> (<c>do_center_crop</c>).</summary>
    public bool DoCenterCrop { get; init; } = true;
    /// <summary>Crop height (<c>crop_size.height</c>).</summary>
    public int CropHeight { get; init; } = 224;
    /// <summary>Crop width (<c>crop_size.width</c>).</summary>
    public int CropWidth { get; init; } = 224;
    /// <summary>Multiply by <see cref="RescaleFactor"/> (<c>do_rescale</c>).</summary>
    public bool DoRescale { get; init; } = true;
    /// <summary>Rescale factor (<c>rescale_factor</c>, 1/255).</summary>
    public double RescaleFactor { get; init; } = 1.0 / 255.0;
    /// <summary>Normalise with <see cref="ImageMean"/> and <see cref="ImageStd"/> (<c>do_normalize</c>).</summary>
    public bool DoNormalize { get; init; } = true;
    /// <summary>Per-channel means (<c>image_mean</c>).</summary>
    public IReadOnlyList<double> ImageMean { get; init; } = ClipMean;
    /// <summary>Per-channel standard deviations (<c>image_std</c>).</summary>
    public IReadOnlyList<double> ImageStd { get; init; } = ClipStd;

    /// <summary>CLIP's settings for a square input of <paramref name="imageSize"/> pixels.</summary>
    public static ClipImageProcessorOptions ForImageSize(int imageSize) =>
        new() { ShortestEdge = imageSize, CropHeight = imageSize, CropWidth = imageSize };

    internal void Validate(string source)
    {
        void Require(bool ok, string what)
        {
            if (!ok) throw new InvalidDataException($"Invalid image preprocessing settings in '{source}': {what}.");
        }
        Require(!DoResize || ShortestEdge > 0, $"size.shortest_edge must be positive, got {ShortestEdge}");
        Require(!DoCenterCrop || (CropHeight > 0 && CropWidth > 0), $"crop_size must be positive, got {CropHeight}x{CropWidth}");
        Require(Enum.IsDefined(Resample), $"resample {(int)Resample} is not a supported PIL filter (1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)");
        Require(ImageMean.Count == 3 && ImageStd.Count == 3, "image_mean and image_std must have 3 values");
        Require(ImageStd.All(s => s != 0), "image_std must not contain 0");
    }
}

/// <summary>
/// CLIP image preprocessing, identical to Hugging Face's <c>CLIPImageProcessor</c> on PIL images: convert to RGB, resize
/// the shortest side (Pillow's bicubic with antialiasing, 8-bit rounding), centre crop (zero padding when the image is
/// smaller than the crop), rescale by 1/255 and normalise with the CLIP mean and std. Produces <c>pixel_values</c>
/// [B, 3, H, W].
/// </summary>
public sealed class ClipImageProcessor
{
    /// <summary>The file name Hugging Face uses.</summary>
    public const string ConfigFile = "preprocessor_config.json";

    /// <summary>Creates a processor with the given settings.</summary>
    public ClipImageProcessor(ClipImageProcessorOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate("ClipImageProcessorOptions");
        Options = options;
    }

    /// <summary>The settings.</summary>
    public ClipImageProcessorOptions Options { get; }

    /// <summary>CLIP's defaults for a square input of <paramref name="imageSize"/> pixels.</summary>
    public static ClipImageProcessor ForImageSize(int imageSize) => new(ClipImageProcessorOptions.ForImageSize(imageSize));

    /// <summary>
    /// Reads <c>folder/preprocessor_config.json</c> when present; otherwise CLIP's defaults for
    /// <paramref name="defaultImageSize"/> (the vision config's image_size).
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not valid JSON or holds invalid settings (named).</exception>
    public static ClipImageProcessor FromFolder(string folder, int defaultImageSize)
    {
        var path = Path.Combine(folder, ConfigFile);
        return File.Exists(path) ? FromFile(path, defaultImageSize) : ForImageSize(defaultImageSize);
    }

    /// <summary>Reads a preprocessor_config.json; absent fields take CLIP's defaults for <paramref name="defaultImageSize"/>.</summary>
    public static ClipImageProcessor FromFile(string path, int defaultImageSize)
    {
        JsonObject o;
        try
        {
            o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new InvalidDataException($"'{path}' does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
        var d = ClipImageProcessorOptions.ForImageSize(defaultImageSize);
        try
        {
            int shortest = d.ShortestEdge;
            if (o["size"] is JsonNode size)
            {
                if (size is JsonObject so)
                {
                    if (so["shortest_edge"] is JsonNode se) shortest = se.GetValue<int>();
                    else throw new InvalidDataException($"'{path}': \"size\" {size.ToJsonString()} has no \"shortest_edge\"; CLIP resizes the shortest edge.");
                }
                else shortest = size.GetValue<int>();
            }
            int ch = d.CropHeight, cw = d.CropWidth;
            if (o["crop_size"] is JsonNode crop)
            {
                if (crop is JsonObject co)
                {
                    ch = co["height"]?.GetValue<int>() ?? throw new InvalidDataException($"'{path}': \"crop_size\" has no \"height\".");
                    cw = co["width"]?.GetValue<int>() ?? throw new InvalidDataException($"'{path}': \"crop_size\" has no \"width\".");
                }
                else ch = cw = crop.GetValue<int>();
            }
            var options = new ClipImageProcessorOptions
            {
                DoResize = o["do_resize"]?.GetValue<bool>() ?? d.DoResize,
                ShortestEdge = shortest,
                Resample = o["resample"] is JsonNode r ? (PilResampleFilter)r.GetValue<int>() : d.Resample,
                DoCenterCrop = o["do_center_crop"]?.GetValue<bool>() ?? d.DoCenterCrop,
                CropHeight = ch,
                CropWidth = cw,
                DoRescale = o["do_rescale"]?.GetValue<bool>() ?? d.DoRescale,
                RescaleFactor = o["rescale_factor"]?.GetValue<double>() ?? d.RescaleFactor,
                DoNormalize = o["do_normalize"]?.GetValue<bool>() ?? d.DoNormalize,
                ImageMean = o["image_mean"] is JsonArray m ? m.Select(x => x!.GetValue<double>()).ToArray() : d.ImageMean,
                ImageStd = o["image_std"] is JsonArray s ? s.Select(x => x!.GetValue<double>()).ToArray() : d.ImageStd,
            };
            options.Validate(path);
            return new ClipImageProcessor(options);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new InvalidDataException($"'{path}' holds a value of the wrong type: {e.Message}", e);
        }
    }

    /// <summary>Writes <c>folder/preprocessor_config.json</c> in Hugging Face's format, atomically.</summary>
    public void Save(string folder)
    {
        var o = Options;
        var json = new JsonObject
        {
            ["image_processor_type"] = "CLIPImageProcessor",
            ["feature_extractor_type"] = "CLIPFeatureExtractor",
            ["do_convert_rgb"] = true,
            ["do_resize"] = o.DoResize,
            ["size"] = new JsonObject { ["shortest_edge"] = o.ShortestEdge },
            ["resample"] = (int)o.Resample,
            ["do_center_crop"] = o.DoCenterCrop,
            ["crop_size"] = new JsonObject { ["height"] = o.CropHeight, ["width"] = o.CropWidth },
            ["do_rescale"] = o.DoRescale,
            ["rescale_factor"] = o.RescaleFactor,
            ["do_normalize"] = o.DoNormalize,
            ["image_mean"] = new JsonArray(o.ImageMean.Select(v => (JsonNode)v).ToArray()),
            ["image_std"] = new JsonArray(o.ImageStd.Select(v => (JsonNode)v).ToArray()),
        };
        Directory.CreateDirectory(folder);
        var path = Path.Combine(folder, ConfigFile);
        var tmp = Path.Combine(folder, $".{ConfigFile}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllText(tmp, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            if (File.Exists(tmp)) File.Delete(tmp);
            throw;
        }
    }

    /// <summary>Output size (height, width) of the pipeline for an image of the given size.</summary>
    public (int Height, int Width) OutputSize(int height, int width)
    {
        if (Options.DoCenterCrop) return (Options.CropHeight, Options.CropWidth);
        return Options.DoResize ? ResizedSize(height, width, Options.ShortestEdge) : (height, width);
    }

    /// <summary>
    /// Hugging Face's shortest-edge rule: the short side becomes <paramref name="shortestEdge"/>, the long side
    /// <c>int(shortestEdge · long / short)</c> (truncated).
    /// </summary>
    public static (int Height, int Width) ResizedSize(int height, int width, int shortestEdge)
    {
        int shortSide = Math.Min(height, width), longSide = Math.Max(height, width);
        int newLong = (int)((double)shortestEdge * longSide / shortSide);
        return height <= width ? (shortestEdge, newLong) : (newLong, shortestEdge);
    }

    /// <summary>Resize and centre crop (the 8-bit stages), returning the RGB image the model sees.</summary>
    public RgbImage ResizeAndCrop(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var img = image;
        if (Options.DoResize)
        {
            var (h, w) = ResizedSize(img.Height, img.Width, Options.ShortestEdge);
            if (h != img.Height || w != img.Width) img = img.Resize(w, h, Options.Resample);
        }
        if (Options.DoCenterCrop) img = CenterCrop(img, Options.CropHeight, Options.CropWidth);
        return img;
    }

    /// <summary>Hugging Face's <c>center_crop</c>: top = (h − ch) // 2, left = (w − cw) // 2, zero padding when smaller.</summary>
    public static RgbImage CenterCrop(RgbImage image, int cropHeight, int cropWidth)
    {
        int h = image.Height, w = image.Width;
        if (h == cropHeight && w == cropWidth) return image;
        int top = FloorDiv(h - cropHeight, 2), left = FloorDiv(w - cropWidth, 2);
        // Padding (when the crop is larger than the image) places the image at ceil((new − old) / 2).
        int padTop = cropHeight > h ? (cropHeight - h + 1) / 2 : 0;
        int padLeft = cropWidth > w ? (cropWidth - w + 1) / 2 : 0;
        int newH = Math.Max(h, cropHeight), newW = Math.Max(w, cropWidth);
        int y0 = Math.Max(0, top + padTop), y1 = Math.Min(newH, top + padTop + cropHeight);
        int x0 = Math.Max(0, left + padLeft), x1 = Math.Min(newW, left + padLeft + cropWidth);
        int outH = y1 - y0, outW = x1 - x0;
        var dst = new byte[(long)outH * outW * 3];
        for (int y = 0; y < outH; y++)
        {
            int sy = y + y0 - padTop;
            if (sy < 0 || sy >= h) continue;
            for (int x = 0; x < outW; x++)
            {
                int sx = x + x0 - padLeft;
                if (sx < 0 || sx >= w) continue;
                long si = ((long)sy * w + sx) * 3, di = ((long)y * outW + x) * 3;
                dst[di] = image.Pixels[si];
                dst[di + 1] = image.Pixels[si + 1];
                dst[di + 2] = image.Pixels[si + 2];
            }
        }
        return RgbImage.Own(outW, outH, dst);
    }

    private static int FloorDiv(int a, int b) => (int)Math.Floor((double)a / b);

    /// <summary>The full pipeline for one image as channel-first floats [3 × H × W].</summary>
    public float[] PreprocessToArray(RgbImage image, out int height, out int width)
    {
        var img = ResizeAndCrop(image);
        height = img.Height;
        width = img.Width;
        var o = Options;
        var result = new float[3L * height * width];
        long plane = (long)height * width;
        // Per channel: rescale in float64 then to float32 (HF rescales in float64 and casts), normalise in float32.
        var mean = o.ImageMean.Select(v => (float)v).ToArray();
        var std = o.ImageStd.Select(v => (float)v).ToArray();
        for (long p = 0; p < plane; p++)
        {
            for (int c = 0; c < 3; c++)
            {
                float v = img.Pixels[p * 3 + c];
                if (o.DoRescale) v = (float)(img.Pixels[p * 3 + c] * o.RescaleFactor);
                if (o.DoNormalize) v = (v - mean[c]) / std[c];
                result[c * plane + p] = v;
            }
        }
        return result;
    }

    /// <summary>Preprocesses one image into <c>pixel_values</c> [1, 3, H, W].</summary>
    public Tensor Preprocess(RgbImage image, ScalarType dtype = ScalarType.Float32, Device? device = null) =>
        Preprocess([image], dtype, device);

    /// <summary>Preprocesses an ML.NET image (BGRA or RGBA pixels; alpha dropped) into [1, 3, H, W].</summary>
    public Tensor Preprocess(MLImage image, ScalarType dtype = ScalarType.Float32, Device? device = null) =>
        Preprocess([RgbImage.FromMLImage(image)], dtype, device);

    /// <summary>Preprocesses ML.NET images into a batch [B, 3, H, W].</summary>
    public Tensor Preprocess(IEnumerable<MLImage> images, ScalarType dtype = ScalarType.Float32, Device? device = null) =>
        Preprocess(images.Select(RgbImage.FromMLImage).ToList(), dtype, device);

    /// <summary>Decodes and preprocesses image files into a batch [B, 3, H, W].</summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="InvalidDataException">A file cannot be decoded (named).</exception>
    public Tensor PreprocessFiles(IEnumerable<string> paths, ScalarType dtype = ScalarType.Float32, Device? device = null) =>
        Preprocess(paths.Select(RgbImage.FromFile).ToList(), dtype, device);

    /// <summary>Preprocesses raw RGB bytes (row-major, 3 bytes per pixel) into [1, 3, H, W].</summary>
    public Tensor Preprocess(ReadOnlySpan<byte> rgb, int width, int height, ScalarType dtype = ScalarType.Float32, Device? device = null) =>
        Preprocess([new RgbImage(width, height, rgb)], dtype, device);

    /// <summary>Preprocesses a batch of images into <c>pixel_values</c> [B, 3, H, W] (all outputs must share one size,
    /// which they do whenever centre cropping is on).</summary>
    /// <exception cref="ArgumentException">The batch is empty or the outputs differ in size.</exception>
    public Tensor Preprocess(IReadOnlyList<RgbImage> images, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("No images to preprocess.", nameof(images));
        var arrays = new float[images.Count][];
        int h0 = 0, w0 = 0;
        Parallel.For(0, images.Count, i => arrays[i] = PreprocessToArray(images[i], out _, out _));
        for (int i = 0; i < images.Count; i++)
        {
            var (h, w) = OutputSize(images[i].Height, images[i].Width);
            if (i == 0) (h0, w0) = (h, w);
            else if (h != h0 || w != w0)
                throw new ArgumentException($"Image {i} preprocesses to {h}x{w}, image 0 to {h0}x{w0}; a batch needs one size (enable centre cropping).", nameof(images));
        }
        var flat = new float[(long)images.Count * 3 * h0 * w0];
        for (int i = 0; i < arrays.Length; i++) Array.Copy(arrays[i], 0, flat, (long)i * arrays[i].Length, arrays[i].Length);
        using var cpu = torch.tensor(flat, [images.Count, 3, h0, w0]);
        return cpu.to(dtype, device ?? torch.CPU);
    }
}
